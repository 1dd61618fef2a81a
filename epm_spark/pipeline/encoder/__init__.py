"""The dual-encoder's training job (the encoder itself, Spark-free, is :mod:`epm_spark.models.encoder`)."""
