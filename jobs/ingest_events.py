"""spark-submit entry point: `epm-spark ingest-events`. Read a search log into search_events.

    spark-submit jobs/ingest_events.py [--conf conf/cluster-gpu.yaml] [--warehouse DIR] --input FILE

ARGS are those of `epm-spark ingest-events --help`.
"""

import sys

from epm_spark.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main(["ingest-events"]))
