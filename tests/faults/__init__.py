"""Fault-injection scenarios: real load, a real fault, then a check of every acknowledgement."""
