"""epm-spark: Spark batch jobs that decide which e-commerce listings are the same product."""

__version__ = "0.1.0"
