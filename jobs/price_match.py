"""spark-submit entry point: `epm-spark price-match`. Compare our prices with matched competitor listings in one currency.

    spark-submit jobs/price_match.py [--conf conf/cluster-gpu.yaml] [--warehouse DIR] ARGS

ARGS are those of `epm-spark price-match --help`.
"""

import sys

from epm_spark.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main(["price-match"]))
