"""Pairs per second of the student matcher in ``label`` mode versus ``explain`` mode.

    python benchmarks/matcher_throughput.py [--model PATH] [--benchmark DIR] [--pairs N] [--device auto]

All figures come from one run on the same pairs and the same loaded model. The baseline is
label mode (one forward pass per pair, the shared system prompt's keys and values computed
once); the other figures are label mode without that prefix cache, and explain mode (greedy
generation of the whole decision, strict parsing, one retry). On a GPU the model runs in
bf16/fp16, on CPU in float32. Needs torch and transformers only (no Spark, no faiss).
Prints one JSON line per figure.

Pairs come from a benchmark folder (default ``$EPM_BENCHMARKS/abt_buy`` or
``../shared/data/benchmarks/abt_buy``): the first ``--pairs`` test pairs, stratified by label.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from epm_spark.io.benchmarks import load_benchmark  # noqa: E402
from epm_spark.models.matcher.evaluation import stratified_sample  # noqa: E402
from epm_spark.models.matcher.student.inference import Matcher  # noqa: E402
from epm_spark.models.matcher.pairs import benchmark_pairs  # noqa: E402
from epm_spark.models.matcher.settings import InferenceSettings  # noqa: E402
from epm_spark.models.weights import PACKAGED_STUDENT  # noqa: E402


def machine(matcher: Matcher) -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average_1m": round(os.getloadavg()[0], 2),
            "gpu": gpu, "device": str(matcher.device), "dtype": str(next(matcher.model.parameters()).dtype),
            "torch": torch.__version__}


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    default_bench = Path(os.environ.get("EPM_BENCHMARKS") or ROOT / ".." / "shared" / "data" / "benchmarks") / "abt_buy"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=PACKAGED_STUDENT, help="matcher model folder or student (zero-shot)")
    parser.add_argument("--benchmark", default=str(default_bench), help="benchmark folder to take pairs from")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16, help="label mode batch")
    parser.add_argument("--explain-batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=192)
    args = parser.parse_args()

    if not Path(args.benchmark).is_dir():
        sys.exit(f"benchmark folder {args.benchmark} not found; set EPM_BENCHMARKS or pass --benchmark")
    bench = load_benchmark(args.benchmark)
    pairs = stratified_sample(benchmark_pairs(bench, "test"), args.pairs, seed=0)
    settings = InferenceSettings(device=args.device, batch_size=args.batch_size,
                                 explain_batch_size=args.explain_batch_size, max_new_tokens=args.max_new_tokens)
    matcher = Matcher.load(args.model, settings)
    matcher.predict_proba(pairs.head(min(4, len(pairs))))  # warm-up: first-call allocations, kernels
    prompts = matcher.prompter.render_frame(pairs)
    prompt_tokens = sum(len(matcher.labels.split(p)[0]) for p in prompts) / len(prompts)
    common = {"benchmark": "matcher_throughput", "pairs": len(pairs), "data": f"{bench.name} test",
              "model": args.model, "prompt_tokens_per_pair": round(prompt_tokens, 1)}

    _, label_s = timed(lambda: matcher.predict_proba(pairs))
    base = len(pairs) / label_s
    figures = [{"figure": "label_mode", "pairs_per_s": base, "seconds": label_s, "ratio_vs_label_mode": 1.0}]

    cache = matcher.MIN_PREFIX
    matcher.MIN_PREFIX = 10**9
    _, nocache_s = timed(lambda: matcher.predict_proba(pairs))
    matcher.MIN_PREFIX = cache
    figures.append({"figure": "label_mode_without_prefix_cache", "pairs_per_s": len(pairs) / nocache_s,
                    "seconds": nocache_s, "ratio_vs_label_mode": (len(pairs) / nocache_s) / base})

    results, explain_s = timed(lambda: matcher.explain(pairs))
    figures.append({"figure": "explain_mode", "pairs_per_s": len(pairs) / explain_s, "seconds": explain_s,
                    "ratio_vs_label_mode": (len(pairs) / explain_s) / base,
                    "tokens_generated_per_pair": sum(r.tokens_generated for r in results) / len(results),
                    "format_valid_rate": sum(r.format_valid for r in results) / len(results)})
    env = machine(matcher)
    for figure in figures:
        figure["pairs_per_s"] = round(figure["pairs_per_s"], 3)
        figure["seconds"] = round(figure["seconds"], 2)
        figure["ratio_vs_label_mode"] = round(figure["ratio_vs_label_mode"], 4)
        print(json.dumps({**common, **figure, "baseline": "label_mode", "machine": env}), flush=True)


if __name__ == "__main__":
    main()
