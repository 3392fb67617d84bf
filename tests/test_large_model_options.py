"""Large-model loading options: attention kernel and device map through load_video_llm, the CLI and the
policy's copied layer (which keeps the host's kernel)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import cacovid.models.options as options
from cacovid.models.loading import load_video_llm
from cacovid.models.options import check_attn_implementation, check_device_map, parse_device_map
from cacovid.policy import CaCoVIDPolicy
from cacovid.policy.layers import bidirectional_mask, host_attn_implementation, make_bidirectional


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory, llava_llm):
    path = tmp_path_factory.mktemp("tiny-llava")
    llava_llm.model.save_pretrained(path)
    llava_llm.processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hosts(llava_dir):
    return {name: load_video_llm(llava_dir, attn_implementation=name) for name in ("eager", "sdpa")}


def test_host_loads_with_the_asked_kernel(hosts):
    for name, host in hosts.items():
        assert host.text_config._attn_implementation == name
        assert host_attn_implementation(host) == name


def test_eager_and_sdpa_hosts_give_the_same_answers(hosts, tiny_frames, tiny_question):
    prompts = {name: host.encode(tiny_frames, tiny_question) for name, host in hosts.items()}
    keep = torch.zeros(prompts["eager"].num_video_tokens, dtype=torch.bool)
    keep[::3] = True
    for k in (None, keep):
        answers = {name: hosts[name].generate(prompts[name], k, max_new_tokens=6) for name in hosts}
        assert answers["eager"] == answers["sdpa"]
    logits = {name: hosts[name].next_token_logits(prompts[name]) for name in hosts}
    assert torch.allclose(logits["eager"], logits["sdpa"], atol=1e-4)


def test_policy_keeps_the_host_kernel_and_scores_agree(hosts, tiny_frames, tiny_question):
    prompt = hosts["eager"].encode(tiny_frames, tiny_question)
    scores = {}
    for name, host in hosts.items():
        policy = CaCoVIDPolicy.from_host(host, seed=0, init_scale=1.0)
        assert policy.config.attn_implementation == name
        assert all(
            m.config._attn_implementation == name for m in policy.layer.modules() if hasattr(m, "is_causal")
        )
        with torch.no_grad():
            scores[name] = policy(prompt).token_scores
    assert torch.allclose(scores["eager"], scores["sdpa"], atol=1e-4)
    # The caller's choice wins over the host's.
    assert (
        CaCoVIDPolicy.from_host(hosts["eager"], attn_implementation="sdpa").config.attn_implementation
        == "sdpa"
    )


def test_eager_policy_layer_is_bidirectional(hosts, tiny_frames, tiny_question):
    """An early video token's output changes when the question after it changes."""
    policy = CaCoVIDPolicy.from_host(hosts["eager"], seed=0, init_scale=1.0)
    a = hosts["eager"].encode(tiny_frames, tiny_question)
    b = hosts["eager"].encode(tiny_frames, "what shape moves left ?")
    with torch.no_grad():
        sa, sb = policy(a).token_scores, policy(b).token_scores
    assert not torch.allclose(sa[:5], sb[:5])


def test_missing_flash_kernel_is_refused_before_loading(monkeypatch, tmp_path):
    monkeypatch.setattr(options, "_importable", lambda package: False)
    with pytest.raises(
        ValueError, match=r"'flash_attention_2' needs the 'flash_attn' package.*installed: eager, sdpa"
    ):
        check_attn_implementation("flash_attention_2")
    # Refused before the folder is even looked at (no weights are read).
    with pytest.raises(ValueError, match="flash_attn"):
        load_video_llm(tmp_path / "absent", attn_implementation="flash_attention_2")
    unknown = r"unknown attention implementation 'fast'.*installed here: eager, sdpa"
    with pytest.raises(ValueError, match=unknown):
        load_video_llm(tmp_path / "absent", attn_implementation="fast")


def test_flash_kernel_in_this_environment_is_refused_unless_installed():
    if "flash_attention_2" in options.installed_attn_implementations():
        assert check_attn_implementation("flash_attention_2") == "flash_attention_2"
    else:
        with pytest.raises(ValueError, match="flash_attn"):
            check_attn_implementation("flash_attention_2")
    assert check_attn_implementation(None) is None


def test_device_map_places_weights_and_skips_the_move(llava_dir):
    # device="cuda" would fail on a CPU-only build if it were applied: the device map wins.
    host = load_video_llm(llava_dir, device="meta", device_map="cpu")
    assert {p.device.type for p in host.model.parameters()} == {"cpu"}


def test_device_map_values():
    assert parse_device_map("auto") == "auto"
    assert parse_device_map("cuda:1") == "cuda:1"
    assert parse_device_map('{"model": "cpu", "lm_head": 0}') == {"model": "cpu", "lm_head": 0}
    assert parse_device_map("") is None
    for bad in ("everywhere", '{"model": "nowhere"}', "{not json"):
        with pytest.raises(ValueError, match="device"):
            parse_device_map(bad)
    with pytest.raises(ValueError, match="empty"):
        check_device_map({})


@pytest.mark.parametrize("name", ["eager", "sdpa", "flash_attention_2", "flash_attention_3"])
def test_bidirectional_mask_formats(name):
    valid = torch.tensor([[True, True, True], [True, True, False]])
    mask = bidirectional_mask(valid, name, torch.float32)
    if name.startswith("flash"):  # flash kernels take a (B, L) padding mask, None when unpadded
        assert torch.equal(mask, valid.long())
        assert bidirectional_mask(valid[:1], name, torch.float32) is None
    else:  # additive (B, 1, L, L): nothing masked but padding keys, so no causal triangle
        assert mask.shape == (2, 1, 3, 3)
        assert (mask[0] == 0).all() and (mask[1, :, :, :2] == 0).all() and (mask[1, :, :, 2] < -1e30).all()


@pytest.mark.parametrize("name", ["eager", "sdpa", "flash_attention_2"])
def test_make_bidirectional_pins_the_kernel(llava_llm, name):
    layer = llava_llm.first_decoder_layer()
    assert make_bidirectional(layer, name) >= 1
    assert layer.self_attn.is_causal is False
    assert layer.self_attn.config._attn_implementation == name


def _cli_app():
    from cacovid.cli import app

    return app


@pytest.mark.parametrize("command", ["eval", "train"])
def test_cli_refuses_bad_values_naming_the_option(command, tmp_path):
    runner = CliRunner()
    base = [command, "--model", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]
    got = runner.invoke(_cli_app(), [*base, "--attn-implementation", "fast"])
    assert got.exit_code == 2, got.output
    assert "--attn-implementation" in got.output and "fast" in got.output
    got = runner.invoke(_cli_app(), [*base, "--device-map", "everywhere"])
    assert got.exit_code == 2, got.output
    assert "--device-map" in got.output


def test_train_recipe_sets_the_options(tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"attn_implementation": "eager", "device_map": "cpu"}))
    runner = CliRunner()
    got = runner.invoke(_cli_app(), ["train", "--config", str(recipe), "--print-config"])
    assert got.exit_code == 0, got.output
    shown = json.loads(got.output)["run"]
    assert shown["attn_implementation"] == "eager" and shown["device_map"] == "cpu"
    got = runner.invoke(
        _cli_app(), ["train", "--config", str(recipe), "--attn-implementation", "sdpa", "--print-config"]
    )
    assert json.loads(got.output)["run"]["attn_implementation"] == "sdpa"  # the command line wins
    recipe.write_text(json.dumps({"attn_implementation": "fast"}))
    got = runner.invoke(_cli_app(), ["train", "--config", str(recipe), "--print-config"])
    assert got.exit_code == 2 and "--attn-implementation" in got.output


def test_eval_passes_the_options_to_the_loader(llava_dir, tmp_path, monkeypatch):
    import cacovid.models as models

    seen = {}

    def fake_load(name, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(models, "load_video_llm", fake_load)
    runner = CliRunner()
    argv = [
        "eval",
        "--model",
        str(llava_dir),
        "--out",
        str(tmp_path / "o"),
        "--methods",
        "random",
        "--n",
        "1",
    ]
    got = runner.invoke(_cli_app(), [*argv, "--attn-implementation", "eager", "--device-map", "cpu"])
    assert got.exit_code == 1, got.output
    assert seen["attn_implementation"] == "eager" and seen["device_map"] == "cpu"
