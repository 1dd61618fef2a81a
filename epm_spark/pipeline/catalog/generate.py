"""``epm-spark generate``: synthetic catalog exports with ground truth, the embedded default's data.

Writes one export file per shop, each in that shop's own format (``ours.csv``;
``competitor_a.csv`` with ``;`` and decimal commas; ``competitor_b.jsonl`` with USD
prices; ``competitor_c.csv`` in GBP), the ground truth ``truth.csv`` (listing ->
true product), and the labelled pairs into ``labelled_pairs`` (benchmark
``synthetic``; sources named as the files, so ``epm-spark ingest --source ours``
lines them up).
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from epm_spark.config import Settings
from epm_spark.io import delta
from epm_spark.synthetic import generate_catalogs

__all__ = ["GenerateReport", "generate", "default_exports_dir"]

log = logging.getLogger(__name__)


@dataclass
class GenerateReport:
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    listings: dict[str, int] = field(default_factory=dict)
    pairs: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"generated synthetic catalogs in {self.out} ({self.seconds:.1f} s)"]
        for source, path in self.files.items():
            lines.append(f"  {source:<14} {self.listings[source]:>7,} listings  {path}")
        lines.append(f"  truth.csv and {self.pairs:,} labelled pairs (labelled_pairs, benchmark 'synthetic')")
        return "\n".join(lines)


def default_exports_dir(settings: Settings) -> Path:
    return Path(settings.warehouse).resolve().parent / "exports"


def generate(settings: Settings, *, out: str | None = None, products: int | None = None,
             competitors: int | None = None, seed: int | None = None) -> GenerateReport:
    g = settings.generate
    start = time.monotonic()
    catalogs = generate_catalogs(
        products=products if products is not None else g.products,
        competitors=competitors if competitors is not None else g.competitors,
        seed=seed if seed is not None else g.seed,
        overlap=g.overlap,
        near_miss_rate=g.near_miss_rate,
    )
    folder = Path(out) if out else default_exports_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    report = GenerateReport(folder)
    for source, frame in catalogs.exports.items():
        style = catalogs.styles[source]
        if style.file_format == "json":
            path = folder / f"{source}.jsonl"
            tmp = path.with_suffix(".jsonl.tmp")
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            path = folder / f"{source}.csv"
            tmp = path.with_suffix(".csv.tmp")
            frame.to_csv(tmp, index=False, sep=";" if style.price_format == "eur_comma" else ",",
                         quoting=csv.QUOTE_MINIMAL)
        tmp.replace(path)  # a reader never sees half a file
        report.files[source] = path
        report.listings[source] = len(frame)
    catalogs.truth.to_csv(folder / "truth.csv", index=False)
    delta.write_pandas(settings.warehouse, "labelled_pairs", catalogs.pairs, "replace",
                       partition={"benchmark": "synthetic"}, job="generate")
    report.pairs = len(catalogs.pairs)
    report.seconds = time.monotonic() - start
    log.info("generated %d sources, %d labelled pairs in %s", len(report.files), report.pairs, folder)
    return report
