"""Adapters against the HF models' own paths: full-token equality, pruned batches vs single
sequences, teacher-forced scoring by hand, attention read-outs, and input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import greedy_margin

from cacovid.models.attention import capture_output, eager_attention
from cacovid.types import EncodedPrompt, QAItem

pytestmark = pytest.mark.float_paths  # .ci/run reruns these on torch's default CPU kernels

ATOL = 1e-5


def _hf_inputs(llm, frames, question):
    return llm.processor(text=llm.chat_text(question), videos=[frames], return_tensors="pt")


def _single(prompt: EncodedPrompt, keep: torch.Tensor, embeds: torch.Tensor | None = None):
    """One pruned sequence built by hand: (1, S, D) embeddings and (1, S) / (3, 1, S) positions."""
    full = torch.ones(prompt.inputs_embeds.shape[0], dtype=torch.bool)
    full[prompt.video_positions] = keep
    e = prompt.inputs_embeds.clone()
    if embeds is not None:
        e[prompt.video_positions[keep]] = embeds
    return e[full].unsqueeze(0), prompt.position_ids[..., full].unsqueeze(-2)


def _logits(llm, embeds, positions):
    # An explicit all-ones mask: without one, transformers reads gaps in the positions as packing.
    mask = torch.ones(embeds.shape[:2], dtype=torch.long)
    with torch.no_grad():
        return llm.model(inputs_embeds=embeds, position_ids=positions, attention_mask=mask).logits[0]


def _greedy_by_hand(llm, embeds, positions, steps):
    """Greedy decoding without cache: full recompute, positions +1 per new token (all rows).

    Each choice must lead its runner-up by more than ATOL: other paths' logits agree with these only to
    ATOL, so only choices decided by more than that are promised to be the same on every path."""
    table = llm.input_embeddings().weight
    out = []
    for _ in range(steps):
        logits = _logits(llm, embeds, positions)[-1]
        assert greedy_margin(logits) > ATOL, "a near tie: the greedy tokens may differ between paths"
        tok = int(logits.argmax())
        out.append(tok)
        if tok in llm.eos_token_ids:
            break
        embeds = torch.cat([embeds, table[tok].view(1, 1, -1)], dim=1)
        positions = torch.cat([positions, positions[..., -1:] + 1], dim=-1)
    return out


def _masks(n, counts, seed=0):
    g = torch.Generator().manual_seed(seed)
    keep = torch.zeros(len(counts), n, dtype=torch.bool)
    for i, c in enumerate(counts):
        keep[i, torch.randperm(n, generator=g)[:c]] = True
    return keep


@pytest.fixture(scope="module")
def encoded(video_llm, tiny_frames, tiny_question):
    return video_llm.encode(tiny_frames, tiny_question)


# ---- (a) all tokens kept == the HF model's own forward ------------------------------------------
def test_full_tokens_match_hf_forward(video_llm, encoded, tiny_frames, tiny_question):
    inputs = _hf_inputs(video_llm, tiny_frames, tiny_question)
    with torch.no_grad():
        ref = video_llm.model(**inputs).logits[0]
    assert torch.equal(encoded.input_ids, inputs["input_ids"][0])
    ours = _logits(video_llm, encoded.inputs_embeds.unsqueeze(0), encoded.position_ids.unsqueeze(-2))
    assert torch.allclose(ours, ref, atol=ATOL)
    assert torch.allclose(video_llm.next_token_logits(encoded)[0], ref[-1], atol=ATOL)


def test_full_tokens_generate_like_hf(video_llm, encoded, tiny_frames, tiny_question):
    inputs = _hf_inputs(video_llm, tiny_frames, tiny_question)
    with torch.no_grad():
        ref = video_llm.model.generate(
            **inputs, max_new_tokens=3, do_sample=False, output_scores=True, return_dict_in_generate=True
        )
    # Both paths' logits agree to ATOL (above): their tokens must too where no choice is a near tie.
    assert greedy_margin(torch.stack(ref.scores)) > ATOL
    ref_new = ref.sequences[0, inputs["input_ids"].shape[1] :].tolist()
    ours = video_llm.generate_ids_rows(
        [(encoded, torch.ones(encoded.num_video_tokens, dtype=torch.bool))], max_new_tokens=3
    )
    assert ours[0].tolist()[: len(ref_new)] == ref_new


def test_encoded_prompt_layout(video_llm, encoded, tiny_frames):
    T, H, W = encoded.video_grid
    assert (H, W) == (7, 7)
    assert encoded.video_grid[0] == (4 if video_llm.family == "llava_onevision" else 2)
    vp = encoded.video_positions
    assert torch.all(vp[1:] == vp[:-1] + 1)  # one contiguous block in (t, h, w) order
    if video_llm.family == "llava_onevision":
        assert encoded.position_ids.dim() == 1
        assert torch.equal(encoded.position_ids, torch.arange(encoded.inputs_embeds.shape[0]))
        nl = encoded.meta["newline_position"]
        assert nl == int(vp[-1]) + 1 and nl not in vp.tolist()
        assert torch.equal(encoded.inputs_embeds[nl], video_llm.model.model.image_newline)
    else:
        pos = encoded.position_ids[:, vp]  # (3, N): t, h, w coordinates
        assert encoded.position_ids.shape[0] == 3
        h = pos[1].view(T, H, W)
        w = pos[2].view(T, H, W)
        assert torch.all(h[:, 1:] - h[:, :-1] == 1) and torch.all(w[:, :, 1:] - w[:, :, :-1] == 1)


# ---- (b) pruned batches == each pruned sequence alone -------------------------------------------
@pytest.mark.parametrize("counts", [[3, 10, 3, 0, 25], [7, 7, 7]])
def test_pruned_batch_matches_single_sequences(video_llm, encoded, counts):
    N = encoded.num_video_tokens
    counts = [c if c else N for c in counts]  # 0 means "all"
    keep = _masks(N, counts)
    rows = [(encoded, k, None) for k in keep]
    batch_logits = video_llm.next_token_logits_rows(rows)
    batch_ids = video_llm.generate_ids_rows(rows, max_new_tokens=3)
    texts = video_llm.generate_rows(rows, max_new_tokens=3)
    for i, k in enumerate(keep):
        e, p = _single(encoded, k)
        assert torch.allclose(batch_logits[i], _logits(video_llm, e, p)[-1], atol=ATOL)
        ref = _greedy_by_hand(video_llm, e, p, 3)
        assert batch_ids[i].tolist()[: len(ref)] == ref
        assert texts[i] == video_llm.tokenizer.decode(ref, skip_special_tokens=True).strip()


def test_answer_logprobs_match_hand_teacher_forcing(video_llm, encoded):
    answers = ["A", "red blue", "square moves left"]
    keep = _masks(encoded.num_video_tokens, [5, 12, encoded.num_video_tokens], seed=1)
    got = video_llm.answer_logprobs(encoded, keep, answers)
    assert got.shape == (3, 3)
    table = video_llm.input_embeddings().weight
    for i, k in enumerate(keep):
        e, p = _single(encoded, k)
        S = e.shape[1]
        for j, ans in enumerate(answers):
            ids = video_llm.tokenizer(ans, add_special_tokens=False)["input_ids"]
            n = len(ids)
            seq = torch.cat([e, table[ids].unsqueeze(0)], dim=1)
            pos = torch.cat([p, p[..., -1:] + torch.arange(1, n + 1)], dim=-1)
            logp = torch.log_softmax(_logits(video_llm, seq, pos), dim=-1)
            ref = sum(logp[S - 1 + t, ids[t]] for t in range(n))
            assert got[i, j].item() == pytest.approx(ref.item(), abs=1e-4)


def test_chunking_rows_matches_one_batch(video_llm, encoded):
    """Rows run one per forward or all in one padded batch: equal up to rounding (other shapes, other
    kernel blocking), and the same greedy texts, as no greedy choice is a near tie (`_greedy_by_hand`)."""
    keep = _masks(encoded.num_video_tokens, [4, 9, 4, 30], seed=2)
    for k in keep:
        _greedy_by_hand(video_llm, *_single(encoded, k), 3)
    answers = ["A", "blue square"]

    def run():
        return (
            video_llm.answer_logprobs(encoded, keep, answers),
            video_llm.next_token_logits(encoded, keep),
            video_llm.generate(encoded, keep, max_new_tokens=3),
        )

    whole = run()
    saved = video_llm.max_batch_tokens
    try:
        video_llm.max_batch_tokens = 1  # one row per forward
        chunked = run()
    finally:
        video_llm.max_batch_tokens = saved
    assert torch.allclose(whole[0], chunked[0], atol=1e-4)
    assert torch.allclose(whole[1], chunked[1], atol=ATOL)
    assert whole[2] == chunked[2]


def test_next_token_logits_score_single_letter_answers(video_llm, encoded):
    keep = _masks(encoded.num_video_tokens, [6, 6], seed=3)
    logits = video_llm.next_token_logits(encoded, keep)
    letters = ["A", "B", "C"]
    ids = [video_llm.tokenizer.convert_tokens_to_ids(x) for x in letters]
    lp = video_llm.answer_logprobs(encoded, keep, letters)
    assert torch.allclose(torch.log_softmax(logits, -1)[:, ids], lp, atol=1e-4)


def test_rows_from_different_prompts_and_replacement_embeds(video_llm, tiny_frames):
    p1 = video_llm.encode(tiny_frames, "what color ?")
    p2 = video_llm.encode(tiny_frames[::-1].copy(), "which shape moves left or right ?")
    k1 = _masks(p1.num_video_tokens, [8], seed=4)[0]
    k2 = _masks(p2.num_video_tokens, [11], seed=5)[0]
    g = torch.Generator().manual_seed(0)
    repl = torch.randn(8, p1.hidden_size, generator=g) * 0.1
    same = p1.inputs_embeds[p1.video_positions[k1]]
    rows = [(p1, k1, None), (p2, k2, None), (p1, k1, repl), (p1, k1, same)]
    logits = video_llm.next_token_logits_rows(rows)
    refs = [
        _logits(video_llm, *_single(p1, k1))[-1],
        _logits(video_llm, *_single(p2, k2))[-1],
        _logits(video_llm, *_single(p1, k1, repl))[-1],
    ]
    for i, ref in enumerate(refs):
        assert torch.allclose(logits[i], ref, atol=ATOL)
    assert torch.allclose(logits[3], logits[0], atol=ATOL)
    assert not torch.allclose(logits[2], logits[0], atol=1e-3)
    assert len(video_llm.generate_rows(rows, max_new_tokens=2)) == 4
    # the (G, K, D) convenience form
    both = video_llm.generate(p1, torch.stack([k1, k1]), torch.stack([repl, same]), max_new_tokens=2)
    assert both == video_llm.generate_rows([rows[2], rows[3]], max_new_tokens=2)


# ---- evidence, vision attention, in-LLM attention -----------------------------------------------
def test_evidence_maps_onto_token_grid(video_llm, tiny_frames):
    ev = np.zeros((5, 7, 7), dtype=bool)
    ev[0, 1, 2] = True  # frame 0
    ev[3, 4, 4] = True  # frame 3
    ev[4, 6, 0] = True  # frame 4 (odd last frame for Qwen)
    frames = np.concatenate([tiny_frames, tiny_frames[:1]])
    prompt = video_llm.encode(frames, "what", evidence=ev)
    T, H, W = prompt.video_grid
    mask = prompt.evidence_mask.view(T, H, W)
    if video_llm.family == "llava_onevision":
        assert torch.equal(mask, torch.from_numpy(ev))
    else:  # temporal pairs (0,1), (2,3), (4,4): a merged token is evidence if any frame's cell is
        assert T == 3
        expected = torch.zeros(3, 7, 7, dtype=torch.bool)
        expected[0, 1, 2] = expected[1, 4, 4] = expected[2, 6, 0] = True
        assert torch.equal(mask, expected)
    with pytest.raises(ValueError, match="evidence"):
        video_llm.encode(frames, "what", evidence=np.zeros((5, 14, 14), dtype=bool))
    with pytest.raises(ValueError, match="evidence"):
        video_llm.encode(frames, "what", evidence=np.zeros((4, 7, 7), dtype=bool))


def test_vision_attention_is_a_distribution_per_frame(video_llm, tiny_frames):
    prompt = video_llm.encode(tiny_frames, "what", vision_attention=True)
    va = prompt.extras["vision_attention"]
    T, H, W = prompt.video_grid
    assert va.shape == (T * H * W,) and torch.all(va > 0)
    # Each frame's patches receive attention summing to 1; pooling / merging 2x2 averages them.
    assert torch.allclose(va.view(T, -1).sum(-1), torch.full((T,), 0.25), atol=1e-4)
    plain = video_llm.encode(tiny_frames, "what")
    assert torch.allclose(plain.inputs_embeds, prompt.inputs_embeds, atol=ATOL)  # same features
    assert "vision_attention" not in plain.extras


def test_llava_vision_attention_matches_hf_output_attentions(llava_llm, tiny_frames):
    prompt = llava_llm.encode(tiny_frames, "what", vision_attention=True)
    pixels = _hf_inputs(llava_llm, tiny_frames, "what")["pixel_values_videos"][0]
    vt = llava_llm.model.model.vision_tower
    with torch.no_grad(), eager_attention(vt):
        att = vt(pixels, output_attentions=True).attentions[-1]  # (T, heads, 196, 196)
    recv = att.mean(dim=(1, 2)).view(4, 7, 2, 7, 2).mean(dim=(2, 4)).reshape(-1)
    assert torch.allclose(prompt.extras["vision_attention"], recv, atol=1e-6)
    assert vt.config._attn_implementation == "sdpa"  # restored


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_recomputed_vision_attention_reproduces_block_output(family, request, tiny_frames):
    llm = request.getfixturevalue(f"{family}_llm")
    from cacovid.models.attention import capture_inputs

    inputs = _hf_inputs(llm, tiny_frames, "what")
    attn = llm._last_vision_attention()
    with torch.no_grad(), capture_inputs(attn) as got_in, capture_output(attn) as got_out:
        llm.model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    args, kwargs = got_in[-1]
    hidden = args[0]
    n = hidden.shape[0]
    v = attn.qkv(hidden).reshape(n, 3, attn.num_heads, -1)[:, 2].transpose(0, 1)  # (heads, n, d)
    segs = llm._vision_attention_probs(got_in[-1])
    out = torch.cat([(probs @ v[:, s:e]).transpose(0, 1).reshape(e - s, -1) for s, e, probs in segs])
    assert torch.allclose(attn.proj(out), got_out[-1], atol=1e-5)


def test_last_token_attention_matches_hf(video_llm, encoded):
    lm = video_llm.language_model()
    with torch.no_grad(), eager_attention(lm):
        att = lm(
            inputs_embeds=encoded.inputs_embeds.unsqueeze(0),
            position_ids=encoded.position_ids.unsqueeze(-2),
            output_attentions=True,
        ).attentions
    for layer in (0, -1):
        got = video_llm.last_token_attention(encoded, layer)
        ref = att[layer][0, :, -1].mean(0)[encoded.video_positions]
        assert got.shape == (encoded.num_video_tokens,)
        assert torch.allclose(got, ref, atol=1e-6)
    assert lm.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="layer"):
        video_llm.last_token_attention(encoded, len(lm.layers))


def test_borrowed_modules_are_copies(video_llm):
    layer = video_llm.first_decoder_layer()
    orig = video_llm.language_model().layers[0]
    for (n1, p1), (n2, p2) in zip(layer.named_parameters(), orig.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2) and p1.data_ptr() != p2.data_ptr()
    rope = video_llm.rotary_embedding()
    assert type(rope) is type(video_llm.language_model().rotary_emb)
    assert rope is not video_llm.language_model().rotary_emb


# ---- items and validation -----------------------------------------------------------------------
def test_encode_item_from_frames_and_file(video_llm, tiny_frames, tmp_path):
    import av

    item = QAItem(id="q1", problem="what color", options=["red", "blue"], solution="A", frames=tiny_frames)
    prompt = video_llm.encode_item(item)
    assert prompt.meta["item_id"] == "q1"
    assert torch.equal(prompt.input_ids, video_llm.encode(tiny_frames, item.prompt_text()).input_ids)

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=4)
        stream.width = stream.height = 112
        stream.pix_fmt = "yuv420p"
        for f in tiny_frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    from_file = video_llm.encode_item(
        QAItem(
            id="q2", problem="what", options=[], solution="x", problem_type="free-form", video_path=str(path)
        )
    )
    assert from_file.video_grid == prompt.video_grid

    with pytest.raises(ValueError, match="zero frames"):
        video_llm.encode_item(
            QAItem(id="q3", problem="what", options=[], solution="x", frames=tiny_frames[:0])
        )
    with pytest.raises(ValueError, match="neither"):
        video_llm.encode_item(QAItem(id="q4", problem="what", options=[], solution="x"))


def test_bad_inputs_raise_value_error(video_llm, encoded, tiny_frames):
    N = encoded.num_video_tokens
    ok = torch.ones(N, dtype=torch.bool)
    with pytest.raises(ValueError, match="zero frames"):
        video_llm.encode(np.zeros((0, 112, 112, 3), dtype=np.uint8), "what")
    with pytest.raises(ValueError, match="zero frames"):
        video_llm.encode([], "what")
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        video_llm.encode(np.zeros((2, 112, 112), dtype=np.uint8), "what")
    with pytest.raises(ValueError, match="N="):
        video_llm.generate(encoded, torch.ones(N + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="N="):
        video_llm.next_token_logits_rows([(encoded, torch.ones(N - 1, dtype=torch.bool))])
    with pytest.raises(ValueError, match="bool"):
        video_llm.generate_rows([(encoded, torch.ones(N, dtype=torch.long))])
    with pytest.raises(ValueError, match="bool"):
        video_llm.answer_logprobs(encoded, torch.ones(N, dtype=torch.float32), ["A"])
    with pytest.raises(ValueError, match="1-D"):
        video_llm.generate_rows([(encoded, ok.view(1, -1))])
    with pytest.raises(ValueError, match=r"\(K, D\)"):
        video_llm.generate_rows([(encoded, ok, torch.zeros(N - 1, encoded.hidden_size))])
    with pytest.raises(ValueError, match=r"\(K, D\)"):
        video_llm.next_token_logits_rows([(encoded, ok, torch.zeros(N, encoded.hidden_size + 1))])
    with pytest.raises(ValueError, match="no rows"):
        video_llm.generate_rows([])
    with pytest.raises(ValueError, match="answers"):
        video_llm.answer_logprobs(encoded, ok, [])
    with pytest.raises(ValueError, match="answers"):
        video_llm.answer_logprobs(encoded, ok, "A")
    with pytest.raises(ValueError, match="max_new_tokens"):
        video_llm.generate(encoded, ok, max_new_tokens=0)
    with pytest.raises(ValueError, match="question"):
        video_llm.encode(tiny_frames, None)


def test_qwen2_5_frame_rate_sets_temporal_positions(qwen2_5_vl_llm, tiny_frames, tiny_question):
    from cacovid.models.qwen2_vl import Qwen2_5_VLVideoLLM

    llm = Qwen2_5_VLVideoLLM(qwen2_5_vl_llm.model, qwen2_5_vl_llm.processor)
    llm.video_fps = 1.0  # 2 frames per temporal token -> 2 s -> 2 * tokens_per_second(2) = 4 ids
    prompt = llm.encode(tiny_frames, tiny_question)
    t_ids = prompt.position_ids[0, prompt.video_positions].view(2, -1)
    assert torch.all(t_ids[1] - t_ids[0] == 4)
    inputs = _hf_inputs(llm, tiny_frames, tiny_question)
    inputs["second_per_grid_ts"] = torch.tensor([2.0])
    with torch.no_grad():
        ref = llm.model(**inputs).logits[0, -1]
    assert torch.allclose(llm.next_token_logits(prompt)[0], ref, atol=ATOL)
    llm.video_fps = 0.0
    with pytest.raises(ValueError, match="video_fps"):
        llm.encode(tiny_frames, tiny_question)


def test_outputs_are_ordinary_tensors_usable_in_training(video_llm, encoded):
    """Encoded prompts feed the trainable policy: they must not be inference-mode tensors and
    must carry no gradient history."""
    assert not encoded.inputs_embeds.is_inference() and not encoded.inputs_embeds.requires_grad
    layer = torch.nn.Linear(encoded.hidden_size, 1)
    layer(encoded.inputs_embeds).sum().backward()
    assert layer.weight.grad is not None
    logits = video_llm.next_token_logits(encoded)
    logits += 1.0  # in-place use outside any no-grad context is allowed
    assert not video_llm.answer_logprobs(encoded, None, ["A"]).is_inference()
