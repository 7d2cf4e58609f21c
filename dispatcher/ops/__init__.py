"""Observing the processes: metrics, the ops server, readiness, lag, loop lag, lane gauges.

Below everything that counts (the delivery code, the router, the deliverer): nothing here
imports another Hooklane package.
"""
