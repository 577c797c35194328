"""How quantities are written for people, shared by the CLI, the job's progress lines and the dashboard.

>>> format_duration(40), format_duration(720), format_duration(7200.0), format_duration(None)
('40 s', '12 min', '2 h 0 min', 'unknown')
"""
from __future__ import annotations

import math

__all__ = ["format_duration"]


def format_duration(seconds: float | None) -> str:
    """``"40 s"``, ``"12 min"``, ``"1 h 20 min"``; ``"unknown"`` for None."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min"
