"""Efficiency accounting: what compression really saves, measured in the same run as accuracy.

Why: token compression is only worth its accuracy cost if the language model's prefill gets cheaper
by more than the selector costs. So for every (method, ratio) we report, beside the uncompressed
model's numbers and as ratios to them:

- `compression_ms`: wall time of the selection itself (for FastV-style methods this includes the
  full-length forward that produces the attention ranking: that is FastV's real ranking cost);
- `encode_ms`: the adapter's `encode_item` (processor + vision tower + projector + embedding);
  `vision_encoder_ms`: the part of it spent in the model's `get_video_features` (vision tower,
  projector, pooling), timed by wrapping that method for the measurement only (None for a model
  without it). Methods that read vision attention encode with eager attention, so theirs differ;
- `prefill_ms`: one language-model forward over the kept sequence up to the first answer logits
  (`next_token_logits_rows`, packing included);
- `ttft_ms`: encode + selection + prefill measured end to end, i.e. time to first token;
- `prefill_flops`: analytic prefill FLOPs from the text config (`prefill_flops`); for FastV-style
  rows the first K layers run at full length, so their FLOPs are counted that way;
- peak memory of the prefill: on CUDA `torch.cuda.max_memory_allocated` (absolute, weights
  included) and its increase over the memory in use before the prefill; on CPU the process RSS
  (sampled from /proc/self/statm by a background thread every 0.2 ms, after `malloc_trim` returns
  freed heap to the OS), reported as peak RSS and its increase over RSS before the prefill. The
  CPU numbers are coarse; `memory_kind` says which was measured.

Times are medians over `repeats` measurements after `warmup` unmeasured ones, per item, then the
median over items. Memory is measured in a separate, untimed pass (the sampler would disturb the
clock). CUDA work is synchronised before every clock read.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cacovid.evaluate.harness import row_generator
from cacovid.evaluate.methods import Method
from cacovid.evaluate.records import EFFICIENCY_FILE, ratio_key, write_json
from cacovid.types import EncodedPrompt, QAItem

if TYPE_CHECKING:
    from cacovid.models.base import VideoLLM


# ---- analytic FLOPs ------------------------------------------------------------------------------
def _cfg(config: Any, name: str, default: Any = None) -> Any:
    value = config.get(name, default) if isinstance(config, dict) else getattr(config, name, default)
    return default if value is None else value


def layer_flops(config: Any, n: int, *, causal: bool = False) -> float:
    """FLOPs (2 per multiply-add) of one decoder layer on a sequence of n tokens.

    Projections: q and o (D × H·hd each), k and v (D × Hkv·hd each); attention: QKᵀ and A·V
    (n² × H·hd each, the full square unless `causal`, as dense kernels compute it); gated MLP:
    gate, up and down (D × M each). Norms, RoPE and softmax are ignored (O(n·D)).
    """
    d = int(_cfg(config, "hidden_size"))
    heads = int(_cfg(config, "num_attention_heads"))
    kv = int(_cfg(config, "num_key_value_heads", heads))
    hd = int(_cfg(config, "head_dim", d // heads))
    m = int(_cfg(config, "intermediate_size"))
    proj = 2 * n * d * (2 * heads * hd + 2 * kv * hd)
    pairs = n * (n + 1) / 2 if causal else n * n
    attn = 2 * 2 * pairs * heads * hd
    mlp = 3 * 2 * n * d * m
    return float(proj + attn + mlp)


def prefill_flops(config: Any, n: int, *, causal: bool = False, lm_head_tokens: int = 1) -> float:
    """Analytic prefill FLOPs of the language model on n tokens (text config: layers, hidden,
    intermediate, heads, kv heads, vocab); the LM head is applied to `lm_head_tokens` positions
    (prefill needs only the last token's logits)."""
    if n < 0:
        raise ValueError(f"sequence length must be >= 0, got {n}")
    layers = int(_cfg(config, "num_hidden_layers"))
    d = int(_cfg(config, "hidden_size"))
    vocab = int(_cfg(config, "vocab_size", 0))
    return layers * layer_flops(config, n, causal=causal) + 2.0 * d * vocab * lm_head_tokens


def fastv_prefill_flops(
    config: Any, n_full: int, n_pruned: int, layer: int, *, causal: bool = False
) -> float:
    """Prefill FLOPs of FastV-style pruning: `layer` layers on all n_full tokens, the rest on n_pruned."""
    layers = int(_cfg(config, "num_hidden_layers"))
    d = int(_cfg(config, "hidden_size"))
    vocab = int(_cfg(config, "vocab_size", 0))
    k = max(0, min(int(layer), layers))
    return (
        k * layer_flops(config, n_full, causal=causal)
        + (layers - k) * layer_flops(config, n_pruned, causal=causal)
        + 2.0 * d * vocab
    )


# ---- clocks and memory ---------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _VisionTimer:
    """Times the model's `get_video_features` while installed (an instance attribute shadowing the
    class method, removed on exit)."""

    def __init__(self, adapter: VideoLLM) -> None:
        self.adapter = adapter
        inner = getattr(adapter.model, "model", None)
        self.target = inner if inner is not None and hasattr(inner, "get_video_features") else None
        self.ms: float | None = None

    @contextlib.contextmanager
    def measure(self) -> Iterator[_VisionTimer]:
        self.ms = None
        if self.target is None:
            yield self
            return
        original = self.target.get_video_features
        device = self.adapter.device

        def timed(*args: Any, **kwargs: Any) -> Any:
            _sync(device)
            start = time.perf_counter()
            out = original(*args, **kwargs)
            _sync(device)
            self.ms = (self.ms or 0.0) + (time.perf_counter() - start) * 1000.0
            return out

        shadowed = "get_video_features" in vars(self.target)  # someone else's instance override
        self.target.get_video_features = timed
        try:
            yield self
        finally:
            if shadowed:
                self.target.get_video_features = original
            else:
                del self.target.get_video_features


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def memory_kind(device: torch.device) -> str:
    """What peak memory means on this device."""
    if device.type == "cuda":
        return "cuda_max_memory_allocated"
    return "cpu_rss_sampled" if os.path.exists("/proc/self/statm") else "unavailable"


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float | None]]:
    """Peak memory during the block: {"peak_mb", "delta_mb"} (see the module docstring)."""
    result: dict[str, float | None] = {"peak_mb": None, "delta_mb": None}
    kind = memory_kind(device)
    if kind == "cuda_max_memory_allocated":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        result.update(peak_mb=peak / 2**20, delta_mb=(peak - before) / 2**20)
        return
    if kind == "unavailable":
        yield result
        return
    _malloc_trim()
    before = _rss_bytes()
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
    peak[0] = max(peak[0], _rss_bytes())
    result.update(peak_mb=peak[0] / 2**20, delta_mb=(peak[0] - before) / 2**20)


# ---- measurement ---------------------------------------------------------------------------------
def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den == 0 else float(num / den)


class EfficiencyMeter:
    """Measures the efficiency table for one adapter (see the module docstring)."""

    def __init__(self, adapter: VideoLLM, *, repeats: int = 5, warmup: int = 1, seed: int = 0) -> None:
        if repeats < 1 or warmup < 0:
            raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
        self.adapter = adapter
        self.repeats = int(repeats)
        self.warmup = int(warmup)
        self.seed = int(seed)
        self.device = adapter.device
        self.vision = _VisionTimer(adapter)

    def _once(self, item: QAItem, method: Method, ratio: float) -> dict[str, Any]:
        dev = self.device
        gen = row_generator(self.seed, str(item.id), method.name, ratio)
        _sync(dev)
        t0 = time.perf_counter()
        with self.vision.measure() as vt:
            prompt = self.adapter.encode_item(item, vision_attention=method.needs_vision_attention)
        _sync(dev)
        t1 = time.perf_counter()
        sel = method.select(prompt, ratio, gen)
        _sync(dev)
        t2 = time.perf_counter()
        self.adapter.next_token_logits_rows([(prompt, sel.keep, sel.embeds)])
        _sync(dev)
        t3 = time.perf_counter()
        return {
            "prompt": prompt,
            "keep": sel.keep,
            "embeds": sel.embeds,
            "encode_ms": (t1 - t0) * 1000.0,
            "vision_encoder_ms": vt.ms,
            "compression_ms": (t2 - t1) * 1000.0,
            "prefill_ms": (t3 - t2) * 1000.0,
            "ttft_ms": (t3 - t0) * 1000.0,
        }

    def _memory(self, prompt: EncodedPrompt, keep: torch.Tensor, embeds: torch.Tensor | None) -> dict:
        with peak_memory(self.device) as mem:
            self.adapter.next_token_logits_rows([(prompt, keep, embeds)])
        return mem

    def _flops(self, prompt: EncodedPrompt, method: Method, kept: int) -> tuple[int, float]:
        cfg = self.adapter.text_config
        n_text = prompt.inputs_embeds.shape[0] - prompt.num_video_tokens
        seq = n_text + kept
        if method.fastv_layer is not None:
            full = n_text + prompt.num_video_tokens
            return seq, fastv_prefill_flops(cfg, full, seq, method.fastv_layer)
        return seq, prefill_flops(cfg, seq)

    def measure(self, items: Sequence[QAItem], method: Method, ratio: float) -> dict[str, Any]:
        """Median timings, FLOPs and memory of one (method, ratio) over `items`."""
        keys = ("encode_ms", "vision_encoder_ms", "compression_ms", "prefill_ms", "ttft_ms")
        per_item: dict[str, list[float | None]] = {k: [] for k in keys}
        seqs, flops, kept, peaks, deltas = [], [], [], [], []
        for item in items:
            if method.needs_evidence and item.evidence is None:
                continue
            samples = [self._once(item, method, ratio) for _ in range(self.warmup + self.repeats)]
            timed = samples[self.warmup :]
            for k in keys:
                per_item[k].append(_median([s[k] for s in timed]))
            last = timed[-1]
            k_kept = int(last["keep"].sum())
            seq, fl = self._flops(last["prompt"], method, k_kept)
            mem = self._memory(last["prompt"], last["keep"], last["embeds"])
            seqs.append(seq)
            flops.append(fl)
            kept.append(k_kept)
            peaks.append(mem["peak_mb"])
            deltas.append(mem["delta_mb"])
        if not kept:
            raise ValueError(f"no item could be measured for {method.name}")
        out: dict[str, Any] = {"method": method.name, "ratio": ratio_key(ratio), "n_items": len(kept)}
        out["kept_tokens"] = float(statistics.mean(kept))
        out["seq_len"] = float(statistics.mean(seqs))
        out.update({k: _median(per_item[k]) for k in keys})
        out["prefill_flops"] = float(statistics.mean(flops))
        out["peak_memory_mb"] = _median(peaks)
        out["peak_memory_delta_mb"] = _median(deltas)
        return out


def with_ratios_to_full(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add speed-ups and fractions relative to the `full` row (uncompressed model) to every row."""
    full = next((r for r in rows if r["method"] == "full"), None)
    for row in rows:
        if full is None:
            break
        row["prefill_speedup"] = _ratio(full["prefill_ms"], row["prefill_ms"])
        row["ttft_speedup"] = _ratio(full["ttft_ms"], row["ttft_ms"])
        row["flops_fraction"] = _ratio(row["prefill_flops"], full["prefill_flops"])
        row["compression_fraction_of_full_prefill"] = _ratio(row["compression_ms"], full["prefill_ms"])
        row["memory_delta_fraction"] = _ratio(row["peak_memory_delta_mb"], full["peak_memory_delta_mb"])
    return rows


def measure_efficiency(
    adapter: VideoLLM,
    items: Sequence[QAItem],
    methods: Sequence[Method],
    ratios: Sequence[float],
    *,
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    model: str | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """The efficiency table for every (method, ratio) on `items`; written to DIR/efficiency.json
    when `out` is given. A method that fails is listed under `failed` with its error."""
    items = list(items)
    if not items:
        raise ValueError("efficiency needs at least one item")
    meter = EfficiencyMeter(adapter, repeats=repeats, warmup=warmup, seed=seed)
    rows, failed = [], []
    ordered = sorted(methods, key=lambda m: m.kind != "full")  # the baseline first
    for method in ordered:
        for ratio in method.ratios(ratios):
            try:
                rows.append(meter.measure(items, method, ratio))
            except Exception as exc:
                failed.append({"method": method.name, "ratio": ratio_key(ratio), "error": f"{exc}"[:300]})
    result = {
        "model": model or adapter.name_or_path,
        "device": str(adapter.device),
        "device_name": torch.cuda.get_device_name(adapter.device) if adapter.device.type == "cuda" else "cpu",
        "dtype": str(adapter.dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "n_items": len(items),
        "repeats": meter.repeats,
        "warmup": meter.warmup,
        "memory_kind": memory_kind(adapter.device),
        "flops_note": "analytic prefill FLOPs, 2 per multiply-add, full-square attention, LM head on 1 token",
        "rows": with_ratios_to_full(rows),
        "failed": failed,
    }
    if out is not None:
        write_json(Path(out) / EFFICIENCY_FILE, result)
    return result
