"""``infworld bench``: offline metrics, metric-judged ratings, the results schema and the report."""
