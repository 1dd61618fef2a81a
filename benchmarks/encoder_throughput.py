"""Titles per second of the project's encode path versus a plain ``model(**batch)`` loop.

    python benchmarks/encoder_throughput.py [--model DIR] [--titles N] [--batch-size B] [--repeats R]

Both paths embed the same titles with the same weights in the same run: the baseline
tokenizes each batch in input order, pads it to its longest title and calls the model;
the project's :meth:`DualEncoder.encode` tokenizes once, batches by token length and
pools without autograd. On a GPU both run in fp16 on CUDA; on CPU in float32. Needs
torch and transformers only (no Spark, no faiss). Prints one JSON line per figure.

Titles come from the benchmark folders (``$EPM_BENCHMARKS`` or ``../shared/data/benchmarks``),
cycled to ``--titles``; without them, from a fixed synthetic generator.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from epm_spark.models.encoder.model import DualEncoder  # noqa: E402
from epm_spark.models.weights import PACKAGED_ENCODER  # noqa: E402


def load_titles(n: int) -> tuple[list[str], str]:
    import csv

    root = Path(os.environ.get("EPM_BENCHMARKS") or ROOT / ".." / "shared" / "data" / "benchmarks")
    titles: list[str] = []
    for name in ("abt_buy", "amazon_google", "wdc_computers"):
        for table in ("tableA.csv", "tableB.csv"):
            path = root / name / table
            if path.exists():
                with open(path, newline="", encoding="utf-8") as fh:
                    for row in csv.DictReader(fh):
                        titles.append(row.get("title") or row.get("name") or "")
    source = f"benchmark tables under {root}"
    if not titles:
        rng = random.Random(7)
        words = "sony hp canon samsung laptop camera lens 16gb 1tb black usb wireless pro mini new sale".split()
        titles = [" ".join(rng.choices(words, k=rng.randint(4, 30))) for _ in range(5000)]
        source = "synthetic titles"
    return [titles[i % len(titles)] for i in range(n)], source


def plain_loop(model, tokenizer, titles: list[str], batch_size: int, max_length: int, device) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for start in range(0, len(titles), batch_size):
            batch = tokenizer(titles[start:start + batch_size], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(F.normalize(((hidden * mask).sum(1) / mask.sum(1)).float(), dim=-1).cpu())
    return torch.cat(out)


def timed(fn, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine(device: torch.device) -> str:
    cpu = f"{platform.machine()} {os.cpu_count()} logical CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}; {cpu}"
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=PACKAGED_ENCODER, help="encoder folder (default: packaged:minilm)")
    parser.add_argument("--titles", type=int, default=None, help="default: 20000 on GPU, 1000 on CPU")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    encoder = DualEncoder.load(args.model, device="cuda" if cuda else "cpu", dtype="float16" if cuda else "float32",
                               max_length=args.max_length)
    device = encoder.device
    n = args.titles or (20000 if cuda else 1000)
    titles, source = load_titles(n)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model, tokenizer = encoder.backbone, encoder.tokenizer

    # Warm-up (CUDA kernels, allocator, tokenizer caches), and a check that both paths agree.
    sample = titles[:256]
    ours_sample = torch.from_numpy(encoder.encode(sample, args.batch_size, show_progress=False))
    plain_sample = plain_loop(model, tokenizer, sample, args.batch_size, args.max_length, device)
    agreement = float((ours_sample * plain_sample).sum(1).min())

    plain_s = timed(lambda: plain_loop(model, tokenizer, titles, args.batch_size, args.max_length, device),
                    args.repeats, sync)
    ours_s = timed(lambda: encoder.encode(titles, args.batch_size, show_progress=False), args.repeats, sync)
    common = {"titles": n, "batch_size": args.batch_size, "max_length": args.max_length, "device": str(device),
              "dtype": str(next(model.parameters()).dtype).replace("torch.", ""), "model": str(args.model),
              "model_version": encoder.model_version, "title_source": source, "machine": machine(device),
              "repeats": args.repeats, "min_cosine_between_paths": round(agreement, 5)}
    print(json.dumps({"figure": "plain model(**batch) loop", "titles_per_s": round(n / plain_s, 1),
                      "seconds": round(plain_s, 3), **common}))
    print(json.dumps({"figure": "DualEncoder.encode", "titles_per_s": round(n / ours_s, 1), "seconds": round(ours_s, 3),
                      "speedup_vs_plain_loop": round(plain_s / ours_s, 2), **common}))


if __name__ == "__main__":
    main()
