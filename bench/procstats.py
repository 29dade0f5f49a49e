"""Process figures the benches report."""

from __future__ import annotations


def rss_mib() -> float:
    """Resident memory of this process, MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0
