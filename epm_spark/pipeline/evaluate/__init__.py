"""The ``evaluate`` jobs: each measures one stage on labelled benchmark data, through the real jobs."""
