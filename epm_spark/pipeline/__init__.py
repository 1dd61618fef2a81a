"""Each job as a function of (spark, settings): reads and writes warehouse tables."""
