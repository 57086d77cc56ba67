"""``rpcwatch rules convert``: Sigma rules as SIEM queries, with the configured networks.

SQL targets (``duckdb``, ``spark-sql``) print rpcwatch's own compiled form, the same the
engines run, for the table shapes the readers produce. The other targets use pySigma's
backends with processing pipelines that are data (``pipelines/*.yml``), and thin
backend subclasses where a backend writes something wrong for these rules.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import pyarrow as pa
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.processing.pipeline import ProcessingPipeline
from sigma.rule import SigmaRule

from rpcwatch.config import Config
from rpcwatch.sigma.compiler import RuleError, compile_rule
from rpcwatch.sigma.expr import fields_of
from rpcwatch.sigma.loader import apply_networks, bundled_rule_files, parse_file, rule_files
from rpcwatch.schema import default_schema
from rpcwatch.sigma.logsources import BoundRule, bind
from rpcwatch.sigma.sql import Dialect, SparkDialect, SqlPrinter, Unprintable
from rpcwatch.sigma.targets import TARGETS, Target
from rpcwatch.sources.windows import SYSTEM_FIELD_TYPES, WINDOWS_TABLE

if TYPE_CHECKING:
    from sigma.conversion.base import Backend


def _backend(target: Target, pipeline_name: str) -> Backend:
    from rpcwatch.sigma.backends import BACKENDS  # pySigma's backends: only this command needs them
    return BACKENDS[target.backend](pipeline(target.pipelines[pipeline_name]))


def _dialect(name: str) -> Dialect:
    if name == "spark":
        return SparkDialect()
    dialect = Dialect()
    # standalone SQL cannot call the engine's Python function: CIDR in plain SQL
    dialect.cidr_mode = "portable"
    return dialect


@dataclass(frozen=True)
class Conversion:
    """One rule's queries for a target, or why it has none."""

    title: str
    id: str
    queries: tuple[str, ...] = ()
    problem: str | None = None


@dataclass
class ConversionResult:
    target: str
    pipeline: str
    conversions: list[Conversion]
    #: statements to run once before the queries (SQL targets: rpcw_ip_key)
    prelude: tuple[str, ...] = ()


def convert(paths: Iterable[str | Path], target_name: str, pipeline_name: str | None = None,
            config: Config | None = None, bundled: bool = True) -> ConversionResult:
    """Convert the bundled rules (unless ``bundled`` is False) and the rules under ``paths``."""
    target = TARGETS[target_name]
    pipeline_name = pipeline_name or target.default_pipeline
    if pipeline_name not in target.pipelines:
        raise ValueError(f"target {target_name} has no pipeline {pipeline_name!r} "
                         f"(one of: {', '.join(target.pipelines)})")
    config = config or Config()
    documents, conversions = _documents([*(bundled_rule_files() if bundled else []), *rule_files(paths)], config)
    if target.dialect is not None:
        dialect = _dialect(target.dialect)
        conversions += [_sql_conversion(document, dialect, config) for document in documents]
        prelude = tuple(dialect.ip_key_definitions()) if any(
            "rpcw_ip_key(" in q for c in conversions for q in c.queries) else ()
        return ConversionResult(target_name, pipeline_name, conversions, prelude)
    rules = [d for d in documents if isinstance(d, SigmaRule)]
    correlations = [d for d in documents if isinstance(d, SigmaCorrelationRule)]
    # Rules first, before references are resolved: pySigma leaves a rule that a correlation
    # references unfinalized (ES|QL without its "from ... | where"), as a part of the
    # correlation rather than a query of its own.
    backend = _backend(target, pipeline_name)
    conversions += [_backend_conversion(rule, backend, target) for rule in rules]
    if correlations:
        SigmaCollection(documents, resolve_references=False).resolve_rule_references()
        # a correlation is converted from its rules' conversions, by the same backend
        backend = _backend(target, pipeline_name)
        for rule in rules:
            _backend_conversion(rule, backend, target)
        conversions += [_backend_conversion(correlation, backend, target) for correlation in correlations]
    return ConversionResult(target_name, pipeline_name, conversions)


def _documents(files: Iterable[Path],
               config: Config) -> tuple[list[SigmaRule | SigmaCorrelationRule], list[Conversion]]:
    """The rules and correlations of the files, with the configured networks applied;
    the ones that cannot be parsed or configured as problems."""
    documents, problems = [], []
    for file in files:
        for document, problem in parse_file(file):
            if problem is not None:
                problems.append(Conversion(problem.title or str(file), problem.id, problem=problem.reason))
                continue
            try:
                if isinstance(document, SigmaRule):
                    apply_networks(document, config)
            except RuleError as exc:
                problems.append(Conversion(document.title, str(document.id or ""), problem=str(exc)))
                continue
            if isinstance(document, (SigmaRule, SigmaCorrelationRule)):
                documents.append(document)
    return documents, problems


def _backend_conversion(document, backend: Backend, target: Target) -> Conversion:
    title, rule_id = document.title, str(document.id or "")
    try:
        if isinstance(document, SigmaCorrelationRule):
            queries = backend.convert_correlation_rule(document)
        else:
            queries = backend.convert_rule(document)
    except NotImplementedError:
        return Conversion(title, rule_id, problem=f"{target.description} does not support this rule type")
    except SigmaError as exc:
        return Conversion(title, rule_id, problem=str(exc))
    return Conversion(title, rule_id, tuple(str(q) for q in queries))


def pipeline(file_name: str | None) -> ProcessingPipeline:
    """A processing pipeline from ``pipelines/`` (a new object: pipelines keep state)."""
    if file_name is None:
        return ProcessingPipeline()
    return ProcessingPipeline.from_yaml(_pipeline_text(file_name))


@lru_cache(maxsize=None)
def _pipeline_text(file_name: str) -> str:
    return (resources.files("rpcwatch.sigma") / "pipelines" / file_name).read_text(encoding="utf-8")


def _sql_conversion(document, dialect: Dialect, config: Config) -> Conversion:
    title, rule_id = document.title, str(document.id or "")
    if isinstance(document, SigmaCorrelationRule):
        return Conversion(title, rule_id, problem="correlation rules are not printed as SQL "
                                                  "(rpcwatch runs them over matched events)")
    try:
        bound = bind(compile_rule(document, config.placeholders))
        return Conversion(title, rule_id, tuple(sql_query(b, dialect) for b in bound))
    except (RuleError, Unprintable, SigmaError) as exc:
        return Conversion(title, rule_id, problem=str(exc))


def sql_query(bound: BoundRule, dialect: Dialect) -> str:
    """``SELECT * FROM <view> WHERE ...`` for one rule on one table."""
    printer = SqlPrinter(table_schema(bound.table, fields_of(bound.expr)), dialect)
    return f"SELECT * FROM {view_name(bound.table)} WHERE {printer.condition(bound.expr)}"


def view_name(table: str) -> str:
    """The SQL name of a table's view: ``zeek.conn`` -> ``zeek_conn``."""
    return table.replace(".", "_")


def table_schema(table: str, fields: Iterable[str]) -> pa.Schema:
    """The columns a table has as the readers produce it. A Zeek log has its stock fields
    with their types (a field outside them is absent, as in hunt on such a log); the
    Windows table has its System fields with their types and every event data field a
    rule reads, as text (Sigma compares numbers written as text as numbers)."""
    if table != WINDOWS_TABLE:
        return default_schema(table)
    columns = dict(SYSTEM_FIELD_TYPES)
    folded = {name.lower() for name in columns}
    for name in fields:
        if name.lower() not in folded:
            columns[name] = pa.string()
            folded.add(name.lower())
    return pa.schema(list(columns.items()))
