"""spark-submit entry point: `epm-spark rank`. Score each query's k nearest listings with the ranker.

    spark-submit jobs/rank_products.py [--conf conf/cluster-gpu.yaml] [--warehouse DIR] \
        --queries search_queries --k 50 --model models/ranker/multi_task-v1

ARGS are those of `epm-spark rank --help`.
"""

import sys

from epm_spark.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main(["rank"]))
