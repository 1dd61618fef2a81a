"""Data in and out of the warehouse: schemas, Delta tables, ingestion, benchmark loaders."""
