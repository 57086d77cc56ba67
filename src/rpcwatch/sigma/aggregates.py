"""What a correlation measures over one group's sliding window, kept up to date as events
enter at the back of the window and leave at the front.

Each aggregate costs O(log n) per event (amortised) in the window size n, and its state is
a function of the window's contents only: adding the window's events one by one to a fresh
aggregate rebuilds it (that is how a saved state is restored).
"""
from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Hashable
from typing import Any, Protocol

from sortedcontainers import SortedList

#: every finite float is an integer multiple of 2**-1074 (the smallest subnormal)
_FIXED_POINT_BITS = 1074


class Aggregate(Protocol):
    def add(self, rule: int, value: Any) -> None:
        """An event enters at the back of the window."""

    def remove(self, rule: int, value: Any) -> None:
        """The oldest event leaves the window."""

    def measure(self) -> Any:
        """The window's value; ``None`` when there is nothing to measure."""


class EventCount:
    def __init__(self) -> None:
        self.count = 0

    def add(self, rule: int, value: Any) -> None:
        self.count += 1

    def remove(self, rule: int, value: Any) -> None:
        self.count -= 1

    def measure(self) -> int:
        return self.count


class DistinctValues:
    """How many distinct values the window holds (events without a value count none)."""

    def __init__(self) -> None:
        self.counts: Counter[Hashable] = Counter()

    def add(self, rule: int, value: Hashable) -> None:
        if value is not None:
            self.counts[value] += 1

    def remove(self, rule: int, value: Hashable) -> None:
        if value is not None:
            left = self.counts[value] - 1
            if left:
                self.counts[value] = left
            else:
                del self.counts[value]

    def measure(self) -> int:
        return len(self.counts)


class ExactSum:
    """Sum (or mean) of the window's numbers, correctly rounded whatever the order events
    came and left in: a running float sum would drift as values leave, so the sum is kept
    exactly, as an integer count of 2**-1074."""

    def __init__(self, mean: bool = False) -> None:
        self.mean = mean
        self.total = 0
        self.count = 0

    def add(self, rule: int, value: float | None) -> None:
        if value is not None:
            self.total += _fixed_point(value)
            self.count += 1

    def remove(self, rule: int, value: float | None) -> None:
        if value is not None:
            self.total -= _fixed_point(value)
            self.count -= 1

    def measure(self) -> float | None:
        if not self.count:
            return None
        divisor = (self.count if self.mean else 1) << _FIXED_POINT_BITS
        try:
            return self.total / divisor  # int / int is correctly rounded
        except OverflowError:
            return math.inf if self.total > 0 else -math.inf


def _fixed_point(value: float) -> int:
    numerator, denominator = value.as_integer_ratio()
    return numerator << (_FIXED_POINT_BITS + 1 - denominator.bit_length())


class Percentile:
    """A percentile of the window's numbers, linearly interpolated between the closest
    ranks, or (``percentile`` None) the median as ``statistics.median`` computes it.
    A sorted list answers rank queries and removes one value in O(log n); two heaps would
    serve only the median, and their lazy deletion keeps values that left the window."""

    def __init__(self, percentile: float | None) -> None:
        self.percentile = percentile
        self.numbers = SortedList()

    def add(self, rule: int, value: float | None) -> None:
        if value is not None:
            self.numbers.add(value)

    def remove(self, rule: int, value: float | None) -> None:
        if value is not None:
            self.numbers.remove(value)

    def measure(self) -> float | None:
        numbers = self.numbers
        if not numbers:
            return None
        if self.percentile is None:
            middle = len(numbers) // 2
            return numbers[middle] if len(numbers) % 2 else (numbers[middle - 1] + numbers[middle]) / 2
        rank = (len(numbers) - 1) * self.percentile / 100
        low, high = math.floor(rank), math.ceil(rank)
        return numbers[low] + (numbers[high] - numbers[low]) * (rank - low)


class RulesPresent:
    """Which of the referenced rules have an event in the window (a bit per rule)."""

    def __init__(self, rules: int) -> None:
        self.counts = [0] * rules
        self.present = 0

    def add(self, rule: int, value: Any) -> None:
        self.counts[rule] += 1
        if self.counts[rule] == 1:
            self.present |= 1 << rule

    def remove(self, rule: int, value: Any) -> None:
        self.counts[rule] -= 1
        if not self.counts[rule]:
            self.present &= ~(1 << rule)

    def measure(self) -> int:
        return self.present


class OrderedPrefix:
    """How many steps of ``sequence`` (rule numbers) the window holds in order, matched
    greedily from the window's start, each step at the earliest event after the last.

    The matched steps' positions are kept. A new event extends them when it is the next
    step (the greedy scan would stop at it too); the oldest event leaving changes them only
    when it was the first step, and then they are found again from the new start by a binary
    search in each rule's positions: O(len(sequence) * log n).
    """

    def __init__(self, sequence: tuple[int, ...]) -> None:
        self.sequence = sequence
        self.positions = {rule: _PositionQueue() for rule in sequence}
        self.steps: list[int] = []
        self.start = 0  # the absolute position of the window's oldest event
        self.end = 0

    def add(self, rule: int, value: Any) -> None:
        position, self.end = self.end, self.end + 1
        queue = self.positions.get(rule)
        if queue is None:
            return
        queue.append(position)
        if len(self.steps) < len(self.sequence) and self.sequence[len(self.steps)] == rule:
            self.steps.append(position)

    def remove(self, rule: int, value: Any) -> None:
        position, self.start = self.start, self.start + 1
        queue = self.positions.get(rule)
        if queue is not None:
            queue.pop_first()
        if self.steps and self.steps[0] == position:
            self._match_from_start()

    def _match_from_start(self) -> None:
        steps: list[int] = []
        after = self.start - 1
        for rule in self.sequence:
            found = self.positions[rule].first_after(after)
            if found is None:
                break
            steps.append(found)
            after = found
        self.steps = steps

    def measure(self) -> int:
        return len(self.steps)


class _PositionQueue:
    """Increasing positions; appended at the back, taken from the front, searchable."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.head = 0

    def append(self, position: int) -> None:
        self.items.append(position)

    def pop_first(self) -> None:
        self.head += 1
        if self.head > 64 and self.head * 2 > len(self.items):
            del self.items[:self.head]
            self.head = 0

    def first_after(self, position: int) -> int | None:
        index = bisect_right(self.items, position, self.head)
        return self.items[index] if index < len(self.items) else None
