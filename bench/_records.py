"""What a sweep cost, read from its run records: the one reading shared by the testbed's bench scripts."""
from __future__ import annotations

import datetime as dt


def span(statuses: list[dict]) -> tuple[float, float]:
    """(wall, busy) seconds of runs' status.json: the first submission to the last end, and the runs'
    own elapsed time summed (core-time where each run trains on one torch thread)."""
    def when(text: str) -> float:
        return dt.datetime.fromisoformat(text).timestamp()

    wall = max(when(s["updated"]) for s in statuses) - min(when(s["submitted"]) for s in statuses)
    return wall, sum(float(s.get("elapsed_s") or 0) for s in statuses)
