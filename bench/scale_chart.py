"""bench.scale's chart: each operation's cost and latency against the payments table's
size, as a ratio to the empty step (bytes per payment: to the first filled step)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.scale import StepResult

# (panel, label, figure name prefix): one line per operation.
LINES = (
    ("cost", "recording CPU per payment", "recording: CPU µs/payment"),
    ("cost", "bytes per payment (four tables)", "bytes/payment: all four"),
    ("cost", "prune a day of references", "prune "),
    ("cost", "reconcile a statement", "reconcile: "),
    ("cost", "premake a month", "maintenance: premake a month: ms"),
    ("cost", "create a month from DEFAULT", "maintenance: create a month"),
    ("cost", "detach an old month", "maintenance: detach the month past retention: ms"),
    ("latency", "recording p99 (64 connections)", "recording: p99 ms"),
    ("latency", "duplicate of an old reference p99", "duplicate of an old reference: p99"),
    ("latency", "recording p99 while pruning", "prune: recording p99"),
    ("latency", "ops search p95 (worst)", "ops search: worst"),
    ("latency", "ops timeline p95 (worst)", "ops timeline: worst"),
)
TITLES = {
    "cost": "cost per operation (ratio to the empty step)",
    "latency": "latency (ratio to the empty step)",
}


def _series(results: list[StepResult], prefix: str) -> tuple[list[float], list[float]]:
    name = next((n for n in results[-1].figures if n.startswith(prefix)), None)
    if name is None:
        return [], []
    base_step = results[0]
    if prefix.startswith("bytes/"):
        base_step = next((r for r in results if r.history > 0), results[0])
    base = base_step.figures.get(name)
    xs, ys = [], []
    for r in results:
        value = r.figures.get(name)
        if value is not None and base:
            xs.append(r.payments / 1e6)
            ys.append(value / base)
    return xs, ys


def draw(results: list[StepResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharex=True)
    for ax, panel in zip(axes, ("cost", "latency"), strict=True):
        for kind, label, prefix in LINES:
            if kind != panel:
                continue
            xs, ys = _series(results, prefix)
            if xs:
                ax.plot(xs, ys, marker="o", label=label)
        target = 1.3 if panel == "cost" else 1.5
        ax.axhline(target, color="grey", linestyle="--", linewidth=0.8)
        ax.axhline(1.0, color="black", linewidth=0.5)
        ax.set_title(TITLES[panel])
        ax.set_xlabel("payments in the table (millions)")
        ax.set_ylabel("ratio")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("paygate: cost against table size (bench.scale)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
