"""Beacon-like timing, scored as RITA scores it.

A program calling home on a timer connects at regular intervals with payloads of a
regular size; people and most software do neither. RITA (Active Countermeasures) scores
both with the same two statistics of a distribution, each from 0 to 1: Bowley's
skewness of the quartiles (a symmetric distribution scores 1) and the median absolute
deviation relative to the median (a tight one scores near 1). The timestamp score takes
them over the intervals between connections, the data-size score over the bytes sent.
RITA's quartiles are the medians of the halves; numpy's linear interpolation is used
here, which differs only by fractions of the spread. RITA's histogram and duration
scores need a whole day of a pair's traffic; a beacon started by an intruder an hour ago
has not had one, so they are left out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

#: RITA counts skewness only when the quartiles are this far apart (seconds, bytes):
#: below it, jitter alone decides the sign
MIN_QUARTILE_SPREAD = 10.0


@dataclass(frozen=True)
class BeaconScore:
    connections: int
    #: median interval between connections, in seconds
    interval: float
    timestamp: float
    data_size: float | None
    score: float

    def describe(self) -> str:
        sizes = "" if self.data_size is None else f", data-size score {self.data_size:.2f}"
        return (f"{self.connections} connections about every {_duration(self.interval)} "
                f"(timestamp score {self.timestamp:.2f}{sizes}; beacon score {self.score:.2f})")


def beacon_score(times: ArrayLike, sizes: ArrayLike | None = None) -> BeaconScore | None:
    """The score of connections at ``times`` (epoch seconds) that sent ``sizes`` bytes;
    None below four connections or three distinct intervals (too few to judge)."""
    stamps = np.sort(np.asarray(times, dtype=np.float64))
    if len(stamps) < 4:
        return None
    intervals = np.diff(stamps)
    intervals = intervals[intervals > 0]
    if len(intervals) < 3:
        return None
    timestamp = _statistical_score(intervals, default_mad_score=1.0)
    size_values = np.asarray(sizes if sizes is not None else (), dtype=np.float64)
    size_values = size_values[np.isfinite(size_values)]
    data_size = _statistical_score(size_values, default_mad_score=0.0) if len(size_values) >= 3 else None
    score = timestamp if data_size is None else (timestamp + data_size) / 2
    return BeaconScore(len(stamps), float(np.median(intervals)), timestamp, data_size, round(score, 3))


def _statistical_score(values: np.ndarray, default_mad_score: float) -> float:
    return round((_skew_score(values) + _mad_score(values, default_mad_score)) / 2, 3)


def _skew_score(values: np.ndarray) -> float:
    """1 - |Bowley skewness|: (Q1 + Q3 - 2 Q2) / (Q3 - Q1)."""
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    spread = q3 - q1
    if spread < MIN_QUARTILE_SPREAD or q2 == q1 or q2 == q3:
        return 1.0
    return float(1.0 - abs((q1 + q3 - 2 * q2) / spread))


def _mad_score(values: np.ndarray, default: float) -> float:
    """(median - MAD) / median, at least 0; ``default`` when the median is below 1."""
    median = float(np.median(values))
    if median < 1:
        return default
    deviation = float(np.median(np.abs(values - median)))
    return max(0.0, (median - deviation) / median)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"
