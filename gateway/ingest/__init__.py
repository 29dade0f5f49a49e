"""One webhook's way in: channels, signatures, deduplication, the group-commit
writer, status updates."""
