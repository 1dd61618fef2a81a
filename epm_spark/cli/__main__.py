"""``python -m epm_spark.cli``: the same as the ``epm-spark`` command."""

import sys

from epm_spark.cli.app import main

sys.exit(main())
