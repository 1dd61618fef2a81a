"""Product search jobs: the search log, the multi-task ranker, the query rewriter, and the index search
they share."""
