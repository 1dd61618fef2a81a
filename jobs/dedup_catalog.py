"""spark-submit entry point: `epm-spark dedup`. Cluster one catalog's listings from its accepted matches, with stable ids.

    spark-submit jobs/dedup_catalog.py [--conf conf/cluster-gpu.yaml] [--warehouse DIR] ARGS

ARGS are those of `epm-spark dedup --help`.
"""

import sys

from epm_spark.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main(["dedup"]))
