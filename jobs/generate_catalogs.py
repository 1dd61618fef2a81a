"""spark-submit entry point: `epm-spark generate`. Write synthetic catalog exports with ground truth.

    spark-submit jobs/generate_catalogs.py [--conf conf/cluster-gpu.yaml] [--warehouse DIR] ARGS

ARGS are those of `epm-spark generate --help`.
"""

import sys

from epm_spark.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main(["generate"]))
