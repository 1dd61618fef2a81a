"""spark-submit entry point: `epm-spark nightly`. The whole night from a plan file, resumable per step.

    spark-submit jobs/nightly.py [--conf conf/cluster-gpu.yaml] [--warehouse DIR] --plan conf/nightly.yaml [--run-id ID]

ARGS are those of `epm-spark nightly --help`.
"""

import sys

from epm_spark.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main(["nightly"]))
