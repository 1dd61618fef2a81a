"""``epm-spark review serve``: people check the matcher's decisions in the browser (docs/review.md).

Three views over the warehouse: the pairs queue (teacher/gold disagreements, then the pairs the
last match run was least sure of), the largest and least certain clusters of the last dedup
run, and the largest undercuts of the last price-match run. Every verdict lands at once in
``rationales`` as a human-verified decision, the rows SFT trains on and the next night's match
follows.
"""

from epm_spark.pipeline.matcher.review_app.app import create_app, make_server, serve

__all__ = ["create_app", "make_server", "serve"]
