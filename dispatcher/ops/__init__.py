"""Observing the processes: metrics, the ops server, readiness, lag, loop lag, gauges."""
