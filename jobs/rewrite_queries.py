"""spark-submit entry point: `epm-spark rewrite`. Refresh the query rewrite cache (query_rewrites).

    spark-submit jobs/rewrite_queries.py [--conf conf/cluster-gpu.yaml] [--warehouse DIR] \
        --queries search_queries --model models/rewriter/rl-v1 --limit 50000

ARGS are those of `epm-spark rewrite --help`.
"""

import sys

from epm_spark.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main(["rewrite"]))
