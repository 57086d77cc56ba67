"""A triage run: the hunt, the second pass for evidence, incidents and exposure."""
from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from rpcwatch.alerts import Alert
from rpcwatch.hunt import Engine, Hunt, HuntPlan, HuntReport
from rpcwatch.sources import InputFile
from rpcwatch.triage.enrich import enrich
from rpcwatch.triage.evidence import EvidenceSearch, EvidenceSet
from rpcwatch.triage.exposure import ExposedHost, exposure_inventory
from rpcwatch.triage.incidents import Incident, IncidentBuilder, entities
from rpcwatch.triage.scope import AddressScope
from rpcwatch.triage.suppress import Suppression, suppress


@dataclass
class TriageResult:
    plan: HuntPlan
    report: HuntReport
    #: every alert of the run, enriched
    alerts: list[Alert]
    #: the alerts to show: suppressed when asked, else all of them
    shown: list[Alert]
    evidence: EvidenceSet = field(default_factory=EvidenceSet)
    incidents: list[Incident] = field(default_factory=list)
    exposure: list[ExposedHost] = field(default_factory=list)


def run_triage(inputs: list[InputFile], plan: HuntPlan, engine: Engine, incidents: bool = True,
               suppression: Suppression | None = None) -> TriageResult:
    """Hunt, then (for incidents) search the same inputs again for the entities' evidence.
    Exposure needs only the alerts; incidents need the second pass."""
    with _replayable(inputs) as replayable:
        hunt = Hunt(replayable, plan, engine)
        alerts = list(enrich(hunt, plan.config))
        evidence = EvidenceSet()
        if incidents:
            sources, victims = entities(alerts, AddressScope(plan.config))
            evidence = EvidenceSearch(sources, victims, plan.config).run(replayable, engine,
                                                                         prefilter=plan.prefilter is not None)
    builder = IncidentBuilder(plan.config, alerts, evidence)
    return TriageResult(
        plan=plan, report=hunt.report, alerts=alerts,
        shown=suppress(alerts, suppression) if suppression else alerts, evidence=evidence,
        incidents=builder.build() if incidents else [],
        exposure=exposure_inventory(builder.flows, builder.hosts))


@contextmanager
def _replayable(inputs: list[InputFile]) -> Iterator[list[InputFile]]:
    """Standard input can be read once; the second pass reads a spooled copy of it."""
    if not any(source.path == "-" for source in inputs):
        yield inputs
        return
    with tempfile.TemporaryDirectory(prefix="rpcwatch-") as folder:
        spooled = Path(folder) / "stdin"
        with open(spooled, "wb") as copy:
            shutil.copyfileobj(sys.stdin.buffer, copy, 1 << 20)
        yield [replace(source, opener=lambda: open(spooled, "rb"), size=spooled.stat().st_size)
               if source.path == "-" else source for source in inputs]
