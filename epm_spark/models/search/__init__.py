"""Product search: shopper-style queries with graded products, simulated engagement, the ranker."""
