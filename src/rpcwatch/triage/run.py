"""A triage run: the hunt, the evidence pass, incidents, scanning and exposure."""
from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from rpcwatch.alerts import Alert
from rpcwatch.hunt import Engine, Hunt, HuntPlan, HuntReport
from rpcwatch.sources import InputFile
from rpcwatch.triage.chain import Chain, attack_chain
from rpcwatch.triage.enrich import enrich
from rpcwatch.triage.evidence import EvidencePass, EvidenceSet
from rpcwatch.triage.exposure import ExposedHost, exposure_inventory
from rpcwatch.triage.incidents import Findings, Incident, IncidentBuilder, targets_of
from rpcwatch.triage.scanning import ScanningFinding
from rpcwatch.triage.scope import AddressScope
from rpcwatch.triage.suppress import Suppression, suppress

#: how many times a triage run reads its inputs (for progress bars)
PASSES = 2


@dataclass
class TriageResult:
    plan: HuntPlan
    report: HuntReport
    #: every alert of the run, enriched
    alerts: list[Alert]
    #: the alerts to show: suppressed when asked, else all of them
    shown: list[Alert]
    evidence: EvidenceSet = field(default_factory=EvidenceSet)
    findings: Findings = field(default_factory=Findings)
    exposure: list[ExposedHost] = field(default_factory=list)

    @property
    def incidents(self) -> list[Incident]:
        return self.findings.incidents

    @property
    def scanning(self) -> list[ScanningFinding]:
        return self.findings.scanning


def run_triage(inputs: list[InputFile], plan: HuntPlan, engine: Engine, incidents: bool = True,
               suppression: Suppression | None = None, chain: Chain | None = None,
               on_bytes: Callable[[int], None] | None = None) -> TriageResult:
    """Hunt, then (for incidents) read the same inputs again for the sources' and victims'
    evidence and baselines. Exposure needs only the alerts; incidents need the second pass."""
    chain = chain or attack_chain()
    with _replayable(inputs) as replayable:
        hunt = Hunt(replayable, plan, engine, on_bytes=on_bytes)
        alerts = list(enrich(hunt, plan.config))
        evidence = EvidenceSet()
        if incidents:
            targets = targets_of(alerts, AddressScope(plan.config), chain)
            evidence = EvidencePass(targets, plan.config, chain).run(
                replayable, prefilter=plan.prefilter is not None, on_bytes=on_bytes)
    builder = IncidentBuilder(plan.config, alerts, evidence, chain)
    return TriageResult(
        plan=plan, report=hunt.report, alerts=alerts,
        shown=suppress(alerts, suppression) if suppression else alerts, evidence=evidence,
        findings=builder.build() if incidents else Findings(),
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
