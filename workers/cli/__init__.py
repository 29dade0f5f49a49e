"""`paygate`: the command line, one module per command (`python -m workers.cli`)."""
