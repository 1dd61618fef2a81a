"""Exact top-k search over N x N listing vectors with the blocker's torch path (the GPU path).

    python benchmarks/exact_topk.py [--n 1000000] [--dim 384] [--k 10] [--chunk 8192]

Model layer only (torch + numpy: runs on a GPU machine without Spark or faiss). Times
:func:`epm_spark.models.index.exact_topk` (fp16 on CUDA) against the same search in
fp32 on the same device and data, in the same run, and checks they agree. Target on
one H100: 1M x 1M x 384 under 60 s. Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=8192)
    parser.add_argument("--baseline-queries", type=int, default=65536,
                        help="queries searched in fp32 for the baseline and agreement check")
    args = parser.parse_args(argv)

    import torch

    from epm_spark.models.index import exact_topk

    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    exact_topk(vectors[:1000], vectors[:1000], args.k, chunk=args.chunk)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    scores, positions = exact_topk(vectors, vectors, args.k, chunk=args.chunk)
    seconds = time.perf_counter() - start
    print(json.dumps({"figure": "exact_topk_seconds", "value": round(seconds, 2), "n": args.n, "dim": args.dim,
                      "k": args.k, "precision": "fp16" if device == "cuda" else "fp32", "device": name,
                      "queries_per_s": round(args.n / seconds, 1), "target_seconds": 60}), flush=True)

    # Baseline: the same search in fp32 matrix products, on a slice of the queries.
    q = min(args.baseline_queries, args.n)
    base = torch.from_numpy(vectors).to(device)
    start = time.perf_counter()
    with torch.inference_mode():
        ref = []
        for s in range(0, q, args.chunk):
            ref.append(torch.topk(torch.from_numpy(vectors[s:s + args.chunk]).to(device) @ base.T, args.k).indices.cpu())
    if device == "cuda":
        torch.cuda.synchronize()
    fp32_seconds = (time.perf_counter() - start) * args.n / q
    ref = torch.cat(ref).numpy()
    agree = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(positions[:q], ref)]))
    print(json.dumps({"figure": "fp32_baseline_seconds_extrapolated", "value": round(fp32_seconds, 2),
                      "measured_queries": q, "device": name}), flush=True)
    print(json.dumps({"figure": "speedup_vs_fp32", "value": round(fp32_seconds / seconds, 2)}), flush=True)
    print(json.dumps({"figure": "top_k_agreement_with_fp32", "value": round(agree, 4)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
