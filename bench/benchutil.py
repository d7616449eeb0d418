"""What several benchmark scripts share (imported as a sibling: scripts run from bench/)."""


def percentile(values: list[float], q: float) -> float:
    """The value at fraction q of the sorted samples (nearest rank, rounding down)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
