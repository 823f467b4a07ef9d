"""From episode results to the report: the collector, statistics, comparisons, adaptive episodes, and the
report's declared shapes and their assembly."""
