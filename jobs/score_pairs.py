"""spark-submit entry point: `epm-spark match`. Decide every candidate pair with the student matcher.

    spark-submit jobs/score_pairs.py [--conf conf/cluster-gpu.yaml] [--warehouse DIR] ARGS

ARGS are those of `epm-spark match --help`.
"""

import sys

from epm_spark.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main(["match"]))
