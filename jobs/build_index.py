"""spark-submit entry point: `epm-spark block`. Build the FAISS index of a source and write candidate pairs.

    spark-submit jobs/build_index.py [--conf conf/cluster-gpu.yaml] [--warehouse DIR] ARGS

ARGS are those of `epm-spark block --help`.
"""

import sys

from epm_spark.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main(["block"]))
