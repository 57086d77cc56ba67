"""The query languages ``rules convert`` writes: rpcwatch's own SQL, and every pySigma
backend installed (found by pySigma's plugin discovery), with rpcwatch's pipelines and
corrections where it has them (data in this module; corrections in
:mod:`rpcwatch.sigma.backends`).

Discovery imports every backend, which costs a noticeable part of a second; only ``rules
convert`` calls :func:`targets`, so other commands do not pay for it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from sigma.conversion.base import Backend

#: the extra that installs the SIEM backends (pyproject.toml)
SIEM_EXTRA = "rpcwatch[siem]"


class TargetUnavailable(ValueError):
    """A target that is not known or not installed: a usage error, with what to do."""


@dataclass(frozen=True)
class Target:
    """A query language: how to convert to it and which pipelines it accepts."""

    name: str
    description: str
    #: pipeline name -> file in pipelines/ (``native`` keeps the event log's own field names)
    pipelines: dict[str, str | None] = field(default_factory=lambda: {"native": None})
    #: a pySigma backend's name in plugin discovery, or
    backend: str | None = None
    #: rpcwatch's own SQL printer: ``duckdb`` or ``spark``
    dialect: str | None = None
    #: how the language writes a comment line around ``{}`` (None: the output has none)
    comment: str | None = None

    @property
    def default_pipeline(self) -> str:
        return next(iter(self.pipelines))


#: targets printed by rpcwatch itself: always available
OWN_TARGETS: dict[str, Target] = {target.name: target for target in (
    Target("spark-sql", "Spark SQL over a view per table", dialect="spark", comment="-- {}"),
    Target("duckdb", "DuckDB SQL over a view per table", dialect="duckdb", comment="-- {}"),
)}

#: what rpcwatch knows about pySigma backends: its pipelines for them and their comment
#: syntax (Lucene has none: its line is for the reader, a query is one line)
KNOWN_BACKENDS: dict[str, Target] = {target.name: target for target in (
    Target("splunk", "Splunk SPL", {"splunk": "splunk.yml", "native": None}, "splunk", comment="``` {} ```"),
    Target("lucene", "Elasticsearch Lucene query string", {"ecs": "ecs.yml", "native": None}, "lucene",
           comment="# {}"),
    Target("esql", "Elasticsearch ES|QL", {"ecs": "ecs.yml", "native": None}, "esql", comment="// {}"),
    Target("kusto", "Microsoft Sentinel / Kusto KQL", {"sentinel": "sentinel.yml", "native": None}, "kusto",
           comment="// {}"),
    Target("eql", "Elasticsearch EQL", backend="eql", comment="// {}"),
    Target("elastalert", "ElastAlert rules (YAML)", backend="elastalert", comment="# {}"),
    Target("splunk_spl2", "Splunk SPL2", backend="splunk_spl2", comment="// {}"),
)}


#: pySigma's own backends for its tests (discovery finds them where pytest is loaded)
PYSIGMA_TEST_BACKENDS = "sigma.backends.test"


@lru_cache(maxsize=1)
def installed_backends() -> dict[str, type[Backend]]:
    """pySigma's backends as its plugin discovery finds them, by name."""
    from sigma.plugins import InstalledSigmaPlugins

    found = InstalledSigmaPlugins.autodiscover(include_pipelines=False, include_validators=False).backends
    # pySigma declares the discovered backends as instances; they are the classes
    return {name: cast("type[Backend]", backend) for name, backend in found.items()
            if not backend.__module__.startswith(PYSIGMA_TEST_BACKENDS)}


def targets() -> dict[str, Target]:
    """Every target available here: rpcwatch's own and one per installed backend."""
    found = dict(OWN_TARGETS)
    for name, backend in sorted(installed_backends().items()):
        found[name] = KNOWN_BACKENDS.get(name) or Target(name, getattr(backend, "name", None) or name, backend=name)
    return found


def target(name: str) -> Target:
    """The target of that name; :class:`TargetUnavailable` says which extra or names to use."""
    available = targets()
    if name in available:
        return available[name]
    if name in KNOWN_BACKENDS:
        raise TargetUnavailable(f"target {name} needs pySigma's SIEM backends, which are not installed: "
                                f"pip install '{SIEM_EXTRA}'")
    raise TargetUnavailable(f"unknown target {name!r} (available here: {', '.join(sorted(available))})")
