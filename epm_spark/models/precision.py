"""Which device a model runs on, and where bf16 pays off: CUDA devices that support it, and CPUs
with bf16 instructions.

On a CPU with AVX-512 BF16 (or AMX), bf16 autocast is faster than float32 for training and
scoring small transformers (measured on the 2-core CI machine: 43 vs 34 training pairs/s and
217 vs 123 scoring pairs/s for the MiniLM cross-encoder); on CPUs without them it is slower.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from epm_spark.errors import EnvironmentProblem

__all__ = ["cpu_has_bf16", "bf16_available", "resolve_device"]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: the GPU when torch sees one, else the CPU; a named CUDA device must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EnvironmentProblem(f"device {device!r} asked for, but torch sees no CUDA device")
    return torch.device(device)


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
        return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))
    except OSError:  # not Linux: trust torch's view of the CPU
        return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX")


def bf16_available(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()
