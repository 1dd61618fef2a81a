"""The model layer: PyTorch, transformers and faiss on pandas, numpy and Arrow. Never imports Spark."""
