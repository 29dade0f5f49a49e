"""Clients of the other servers: Redis (the reference cache) and Kafka."""
