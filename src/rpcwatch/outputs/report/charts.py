"""Chart geometry for the report's inline SVG: numbers and labels only; the template
draws them (and escapes the labels like every other value)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rpcwatch.alerts import Alert, iso_from_micros


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    labels: list[tuple[float, float, str]]  # x, y, text


def timeline(alerts: Sequence[Alert], buckets: int = 48, width: int = 960, height: int = 180) -> Chart:
    """Alerts per time bucket, established ones stacked on the others."""
    times = [(micros, a.outcome == "established") for a in alerts if (micros := a.micros) is not None]
    if not times:
        return Chart(width, height, [], [(8, height / 2, "no dated alerts")])
    start, end = min(t for t, _ in times), max(t for t, _ in times)
    span = max(end - start, 1)
    counts: list[list[int]] = [[0, 0] for _ in range(buckets)]
    for t, hit in times:
        counts[min(buckets - 1, (t - start) * buckets // span)][int(hit)] += 1
    top = max(sum(c) for c in counts)
    plot, step = height - 30, width / buckets
    bars = []
    for index, (others, established) in enumerate(counts):
        base: float = plot
        for count, css, what in ((others, "bar-other", "not established"), (established, "bar-hit", "established")):
            if count:
                tall = plot * count / top
                base -= tall
                moment = iso_from_micros(start + span * index // buckets)[:19].replace("T", " ")
                bars.append(Bar(index * step + 1, base, max(step - 2, 1), tall, css, f"{moment}: {count} {what}"))
    labels: list[tuple[float, float, str]] = [(0, height - 8, iso_from_micros(start)[:19].replace("T", " ")),
              (width - 150, height - 8, iso_from_micros(end)[:19].replace("T", " ")),
              (0, 12, f"max {top} per {_duration(span // buckets)}")]
    return Chart(width, height, bars, labels)


def ranking(counts: Sequence[tuple[str, int]], width: int = 460, row: int = 22) -> Chart:
    """Horizontal bars, one per (label, count), largest first."""
    top = max((n for _, n in counts), default=1)
    bars: list[Bar] = []
    labels: list[tuple[float, float, str]] = []
    for index, (label, count) in enumerate(counts):
        y = index * row
        length = (width - 230) * count / top
        bars.append(Bar(200, y + 4, max(length, 1), row - 8, "bar-rank", f"{label}: {count}"))
        labels.append((0, y + row - 7, label))
        labels.append((206 + length, y + row - 7, str(count)))
    return Chart(width, max(len(counts), 1) * row, bars, labels)


def _duration(micros: int) -> str:
    seconds = max(micros // 1_000_000, 1)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds} s"
