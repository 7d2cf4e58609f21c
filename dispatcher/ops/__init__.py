"""Operating the processes: metrics, the ops server, readiness, lag, gauges, status."""
