"""spark-submit entry point: `epm-spark load-benchmark`. Load a benchmark folder into products and labelled_pairs.

    spark-submit jobs/load_benchmark.py [--conf conf/cluster-gpu.yaml] [--warehouse DIR] ARGS

ARGS are those of `epm-spark load-benchmark --help`.
"""

import sys

from epm_spark.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main(["load-benchmark"]))
