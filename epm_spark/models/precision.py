"""Which device a model runs on, and whether bf16 is there (CUDA devices that support it, CPUs
with bf16 instructions) and pays off.

bf16 autocast pays off on CPUs with AMX tile units. With AVX-512 BF16 alone it is slower: on a
2-core virtual machine whose CPU has AVX-512 BF16 but does not expose AMX, the MiniLM ranker
trained at 2.6 steps/s of 32 pairs in float32 against 1.8 under bf16 autocast, and scored 227
against 141 pairs/s; the matcher's MiniLM cross-encoder (batches of 16 pairs of 110 word pieces)
trained at 28.5 pairs/s in float32 against 15.2, and scored 107 against 60; the SmolLM2-135M
student's LoRA step (4 sequences of 384 tokens) took 5.1 s in float32 against 8.2 s under
autocast, and with float32 weights it scored 4.6 pairs/s against 2.7 with bf16 weights. An
earlier 2-core CI machine had measured the opposite for the cross-encoder (43 vs 34 training
pairs/s, 217 vs 123 scoring pairs/s in bf16), its CPU flags not recorded.
:func:`bf16_autocast_faster` says whether bf16 should beat float32; every model follows it (the
dual-encoder stays float32 on CPUs). :func:`bf16_available` says whether the hardware has bf16 at all.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from epm_spark.errors import EnvironmentProblem

__all__ = ["cpu_has_bf16", "cpu_has_amx", "bf16_available", "bf16_autocast_faster", "resolve_device"]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: the GPU when torch sees one, else the CPU; a named CUDA device must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EnvironmentProblem(f"device {device!r} asked for, but torch sees no CUDA device")
    return torch.device(device)


@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str] | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return frozenset(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:  # not Linux
        return None


def cpu_has_bf16() -> bool:
    flags = _cpu_flags()
    if flags is None:  # trust torch's view of the CPU
        return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX")
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def cpu_has_amx() -> bool:
    flags = _cpu_flags()
    return flags is not None and "amx_bf16" in flags


def bf16_available(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def bf16_autocast_faster(device: torch.device | str) -> bool:
    """Whether bf16 autocast beats float32 for a small encoder: CUDA devices that support bf16, and
    CPUs with AMX (AVX-512 BF16 alone measured slower, module docstring)."""
    device = torch.device(device)
    if device.type == "cpu":
        return cpu_has_amx()
    return bf16_available(device)
