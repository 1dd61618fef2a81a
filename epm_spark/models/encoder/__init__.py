"""Siamese dual-encoder: model, losses, training data, trainer and retrieval evaluation (no Spark)."""
