"""Query rewriting: a teacher's rewrites distilled into the student LLM, refined with GRPO on simulated feedback.

Seed: "RL-based Query Rewriting with Distilled LLM for online E-Commerce Systems". Spark-free:
the Spark jobs in :mod:`epm_spark.pipeline.search.rewrite` and :mod:`epm_spark.pipeline.search.train_rewriter`
wrap it. See ``docs/rewriter.md``.
"""
