"""Payment providers' own signature schemes, one module each, and the registry that
builds any scheme (these and the four of gateway.ingest.signatures) for a channel."""
