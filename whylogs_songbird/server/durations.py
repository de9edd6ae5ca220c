"""Durations written for people: ``400d``, ``12h``, ``15m``, ``30s`` (``--retention``)."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")


def parse_duration(text: str) -> int:
    """The seconds of ``<number><unit>`` (unit ``s``, ``m``, ``h``, ``d`` or ``w``); ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"{text[:40]!r} is not a duration: write a positive number and a unit, e.g. 400d, 12h, 15m or 30s"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]
