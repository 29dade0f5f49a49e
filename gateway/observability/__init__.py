"""Metrics, logs, GC pauses, gauges and their exposition.

This package's __init__ imports neither prometheus_client nor `metrics`: the
multiprocess directory must be prepared before prometheus_client is first imported."""
