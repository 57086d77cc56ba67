"""Beacon scoring (RITA's timestamp and data-size statistics) on connection times with a
known shape."""
from __future__ import annotations

import random

import pytest

from rpcwatch.triage.beacon import beacon_score


def times(intervals: list[float], start: float = 1_700_000_000.0) -> list[float]:
    out = [start]
    for interval in intervals:
        out.append(out[-1] + interval)
    return out


def test_a_timer_with_jitter_and_steady_payloads_is_a_beacon():
    rng = random.Random(1)
    beat = times([60 * rng.uniform(0.9, 1.1) for _ in range(120)])
    score = beacon_score(beat, [1100 + rng.randrange(40) for _ in beat])
    assert score.connections == 121 and 57 < score.interval < 63
    assert score.timestamp > 0.9 and score.data_size > 0.95 and score.score > 0.9
    assert score.describe().startswith("121 connections about every 1.0 min (timestamp score 0.9")


def test_people_and_poisson_traffic_are_not():
    rng = random.Random(2)
    browsing = times([rng.expovariate(1 / 90) for _ in range(120)])
    score = beacon_score(browsing, [rng.randrange(200, 20000) for _ in browsing])
    assert score.score < 0.6 and score.timestamp < 0.7


def test_a_perfect_timer_without_payload_sizes_is_judged_on_time_alone():
    score = beacon_score(times([300.0] * 20), None)
    assert (score.timestamp, score.data_size, score.score) == (1.0, None, 1.0)


@pytest.mark.parametrize("stamps", [[], [1.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0, 6.0]])
def test_too_few_connections_or_intervals_are_not_judged(stamps):
    assert beacon_score(stamps) is None


def test_skewed_intervals_lose_the_skew_score():
    """Mostly one interval with a long tail: Bowley's skewness is far from zero."""
    score = beacon_score(times([60.0] * 10 + [61.0] * 10 + [200.0] * 8 + [900.0] * 2))
    assert score.timestamp < 0.8
