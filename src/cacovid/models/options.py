"""Checks of the large-model loading options (attention kernel, device map), before any weights load.

Why a module of its own: a bad kernel name or a missing `flash_attn` package otherwise surfaces only
after minutes of weight loading, as a transformers traceback; checked here, the caller gets one
ValueError naming the value and what is installed, and the CLI turns it into a usage error.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

# Kernel name → the package it needs (None: ships with torch).
ATTN_IMPLEMENTATIONS: dict[str, str | None] = {
    "eager": None,
    "sdpa": None,
    "flash_attention_2": "flash_attn",
    "flash_attention_3": "flash_attn_interface",
}
# The strategies `from_pretrained(device_map=...)` accepts as a string besides a device name.
DEVICE_MAP_STRATEGIES: tuple[str, ...] = ("auto", "balanced", "balanced_low_0", "sequential")


def installed_attn_implementations() -> list[str]:
    """The kernels whose package is importable here, in ATTN_IMPLEMENTATIONS order."""
    return [name for name, pkg in ATTN_IMPLEMENTATIONS.items() if pkg is None or _importable(pkg)]


def _importable(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def check_attn_implementation(name: str | None) -> str | None:
    """`name` itself if it is a known kernel whose package is installed (None passes: transformers'
    default); ValueError naming it and the installed ones otherwise."""
    if name is None:
        return None
    installed = ", ".join(installed_attn_implementations())
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"unknown attention implementation {name!r}; known: {', '.join(ATTN_IMPLEMENTATIONS)} "
            f"(installed here: {installed})"
        )
    package = ATTN_IMPLEMENTATIONS[name]
    if package is not None and not _importable(package):
        raise ValueError(
            f"attention implementation {name!r} needs the {package!r} package, which is not installed; "
            f"installed: {installed}"
        )
    return name


def check_device_map(device_map: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """`device_map` itself if `from_pretrained` can take it: a strategy ("auto", "balanced",
    "balanced_low_0", "sequential"), a device ("cpu", "cuda", "cuda:1", "mps", …), or a dict of module
    name → device. Needs `accelerate`. ValueError naming the value otherwise."""
    import torch

    if device_map is None:
        return None
    if not _importable("accelerate"):
        raise ValueError(f"device_map={device_map!r} needs the 'accelerate' package, which is not installed")
    if isinstance(device_map, dict):
        if not device_map:
            raise ValueError("device_map is an empty dict: map module names to devices")
        for module, device in device_map.items():
            if not isinstance(module, str) or not _is_device(device, torch):
                raise ValueError(
                    f"device_map entry {module!r}: {device!r} is not a device (cpu, disk, cuda:N, N)"
                )
        return device_map
    if not isinstance(device_map, str) or not device_map:
        raise ValueError(f"device_map must be a string or a dict, got {device_map!r}")
    if device_map in DEVICE_MAP_STRATEGIES or _is_device(device_map, torch):
        return device_map
    raise ValueError(
        f"device_map {device_map!r} is neither a strategy ({', '.join(DEVICE_MAP_STRATEGIES)}) nor a "
        "device (cpu, cuda, cuda:1, …)"
    )


def _is_device(value: Any, torch: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    if value == "disk":
        return True
    try:
        torch.device(value)
    except (RuntimeError, TypeError):
        return False
    return True


def parse_device_map(text: str | None) -> str | dict[str, Any] | None:
    """A command-line `--device-map`: a strategy or device name, or a JSON object of module → device;
    checked with `check_device_map`."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as e:
            raise ValueError(f"device map {text!r} is not valid JSON: {e}") from None
        return check_device_map(value)
    return check_device_map(text)
