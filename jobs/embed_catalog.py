"""spark-submit entry point: `epm-spark embed`. Embed the listings of one or more sources (incremental).

    spark-submit jobs/embed_catalog.py [--conf conf/cluster-gpu.yaml] [--warehouse DIR] ARGS

ARGS are those of `epm-spark embed --help`.
"""

import sys

from epm_spark.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main(["embed"]))
