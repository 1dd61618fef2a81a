"""spark-submit entry point: `epm-spark ingest`. Ingest one catalog export into products (bad rows into products_quarantine).

    spark-submit jobs/ingest.py [--conf conf/cluster-gpu.yaml] [--warehouse DIR] ARGS

ARGS are those of `epm-spark ingest --help`.
"""

import sys

from epm_spark.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main(["ingest"]))
