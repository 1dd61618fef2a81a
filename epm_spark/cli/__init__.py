"""The ``epm-spark`` command: every job of the suite for a person at a terminal.

    epm-spark [--conf FILE] [--warehouse DIR] [--set KEY=VALUE ...] VERB [ARGS]

Each verb parses its arguments, loads the settings once, and calls the job
function of the same name in :mod:`epm_spark.pipeline` (or the model layer for
verbs that need no Spark). Errors the user can act on print as one line and exit
with status 2; anything else is a bug and keeps its traceback.

The verbs live by family (:mod:`.warehouse`, :mod:`.catalog`, :mod:`.matcher`, :mod:`.search`,
:mod:`.evaluate`), each module listing its own in ``VERBS``; :mod:`.app` builds the parser from
them in that order and runs a verb as a recorded job.
"""

from epm_spark.cli.app import build_parser, job_main, main, setup_logging
from epm_spark.cli.common import default_run_id

__all__ = ["build_parser", "default_run_id", "job_main", "main", "setup_logging"]
