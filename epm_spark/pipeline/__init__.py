"""Each job as a function of (spark, settings): reads and writes warehouse tables.

By family: :mod:`.catalog` (the nightly catalog jobs), :mod:`.encoder` (the dual-encoder's
training job), :mod:`.matcher` (the matcher's training jobs and the review page), :mod:`.search`
(search log, ranker, rewriter), :mod:`.evaluate` (quality on benchmark data); :mod:`.runs` records
each job attempt in ``job_runs`` and :mod:`.sql` serves every table to Spark SQL.
"""
