"""``rpcwatch rules convert``: Sigma rules as SIEM queries, with the configured networks.

SQL targets (``duckdb``, ``spark-sql``) print rpcwatch's own compiled form, the same the
engines run, for the table shapes the readers produce. The other targets are pySigma's
installed backends (:mod:`rpcwatch.sigma.targets`). A Windows rule of a category is
converted once per log source rpcwatch reads it from (``mappings/logsources.yml``: Sysmon,
and the Security log's equivalent where there is one): each route adds its channel and
event ids and renames fields to the event log's own names, then the target's pipeline
(``pipelines/*.yml``, data) renames those to the SIEM add-on's names.

Rule text reaches the output in comments (:func:`comment_line`) and in the backends'
literals and field names (escaped by :mod:`rpcwatch.sigma.backends`).
"""
from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.processing.pipeline import ProcessingPipeline
from sigma.rule import SigmaRule

from rpcwatch.config import Config
from rpcwatch.schema import default_schema
from rpcwatch.sigma.compiler import RuleError, compile_rule
from rpcwatch.sigma.expr import fields_of
from rpcwatch.sigma.loader import RuleProblem, bundled_rule_files, rule_files
from rpcwatch.sigma.logsources import BoundRule, Route, bind, route_service, routes_for, runs_on
from rpcwatch.sigma.parse import apply_networks, parse_file
from rpcwatch.sigma.sql import Dialect, SparkDialect, SqlPrinter, Unprintable
from rpcwatch.sigma.targets import Target, TargetUnavailable, target
from rpcwatch.sources.windows import SYSTEM_FIELD_TYPES, WINDOWS_TABLE

if TYPE_CHECKING:
    from sigma.conversion.base import Backend

#: characters that end a line somewhere (a comment must stay one line in every language)
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


def comment_line(target_name: str, text: str) -> str | None:
    """Rule text (a title, an id) as one comment line of the target's language, or None
    where the language has no comments. Line breaks and other control characters become
    a space, so nothing after them can leave the comment; Splunk's block comment also
    loses its delimiter (a backtick becomes an apostrophe)."""
    template = target(target_name).comment
    if template is None:
        return None
    text = _LINE_BREAKS.sub(" ", text)
    if template.startswith("```"):
        text = text.replace("`", "'")
    return template.format(text)


def _backend(target_: Target, pipeline_name: str, route: ProcessingPipeline | None = None) -> Backend:
    from rpcwatch.sigma.backends import backend_class  # pySigma's backends: only this command needs them

    assert target_.backend is not None, "targets without an SQL dialect name a backend (targets.py)"
    chosen = pipeline(target_.pipelines[pipeline_name])
    return backend_class(target_.backend)(route + chosen if route is not None else chosen)


def _dialect(name: str) -> Dialect:
    if name == "spark":
        return SparkDialect()
    dialect = Dialect()
    # standalone SQL cannot call the engine's Python function: CIDR in plain SQL
    dialect.cidr_mode = "portable"
    return dialect


@dataclass(frozen=True)
class Conversion:
    """One rule's queries for a target, and why it has none (or not all it should)."""

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
    """Convert the bundled rules (unless ``bundled`` is False) and the rules under ``paths``.
    Raises :class:`ValueError` (a usage error) for an unknown target or pipeline."""
    chosen = target(target_name)
    pipeline_name = pipeline_name or chosen.default_pipeline
    if pipeline_name not in chosen.pipelines:
        raise TargetUnavailable(f"target {target_name} has no pipeline {pipeline_name!r} "
                                f"(one of: {', '.join(chosen.pipelines)})")
    config = config or Config()
    documents, conversions = _documents([*(bundled_rule_files() if bundled else []), *rule_files(paths)], config)
    if chosen.dialect is not None:
        dialect = _dialect(chosen.dialect)
        conversions += [_sql_conversion(document, dialect, config) for document in documents]
        prelude = tuple(dialect.ip_key_definitions()) if any(
            "rpcw_ip_key(" in q for c in conversions for q in c.queries) else ()
        return ConversionResult(target_name, pipeline_name, conversions, prelude)
    rules = [d for d in documents if isinstance(d, SigmaRule)]
    correlations = [d for d in documents if isinstance(d, SigmaCorrelationRule)]
    # Rules first, before references are resolved: pySigma leaves a rule that a correlation
    # references unfinalized (ES|QL without its "from ... | where"), as a part of the
    # correlation rather than a query of its own.
    conversions += [_rule_conversion(rule, chosen, pipeline_name, config) for rule in rules]
    if correlations:
        SigmaCollection([*documents], resolve_references=False).resolve_rule_references()
        # a correlation is converted from its rules' conversions, by the same backend
        backend = _backend(chosen, pipeline_name)
        for rule in rules:
            _backend_conversion(rule, backend, chosen)
        conversions += [_backend_conversion(correlation, backend, chosen) for correlation in correlations]
    return ConversionResult(target_name, pipeline_name, conversions)


def _rule_conversion(rule: SigmaRule, target_: Target, pipeline_name: str, config: Config) -> Conversion:
    """The rule's queries, one per log source it reads; a log source the target's
    pipeline cannot express is named in ``problem`` next to the queries of the others."""
    variants = _log_source_variants(rule, config)
    if not variants:
        return _backend_conversion(rule, _backend(target_, pipeline_name), target_)
    queries: list[str] = []
    problems: list[str] = []
    for service, route in variants:
        converted = _backend_conversion(copy.deepcopy(rule), _backend(target_, pipeline_name, route), target_)
        queries += converted.queries
        if converted.problem:
            problems.append(f"{service} log source not converted: {converted.problem}")
    return Conversion(rule.title, str(rule.id or ""), tuple(queries), "; ".join(problems) or None)


def _log_source_variants(rule: SigmaRule, config: Config) -> list[tuple[str, ProcessingPipeline]]:
    """For a rule of a category whose routes are event log channels: each channel's
    service name and the pipeline that narrows the rule to it; empty for other rules."""
    logsource = {"category": rule.logsource.category, "product": rule.logsource.product,
                 "service": rule.logsource.service}
    if logsource["service"] or not logsource["category"]:
        return []
    routes = [(route_service(route), route) for route in routes_for(logsource)]
    named = [(service, route) for service, route in routes if service is not None]
    if not routes or len(named) < len(routes):
        return []
    try:
        compiled = compile_rule(rule, config.placeholders)
    except RuleError:  # rpcwatch cannot run it, a backend may still convert it: as it is
        return []
    return [(service, route_pipeline(route, {**logsource, "service": service}))
            for service, route in named if runs_on(route, compiled)]


def route_pipeline(route: Route, logsource: dict[str, str | None]) -> ProcessingPipeline:
    """A route of ``logsources.yml`` as a pySigma pipeline: its selection added to the rule,
    its value and field renames, and ``logsource`` (the rule's, with the channel's
    service) set on the rule for the target's pipeline to recognise."""
    items: list[dict] = [{"type": "add_condition", "conditions": dict(route.selection)}]
    items += [{"type": "map_string", "mapping": dict(values), "field_name_conditions": [
        {"type": "include_fields", "fields": [field]}]} for field, values in route.values.items()]
    if route.fields:
        items.append({"type": "field_name_mapping", "mapping": dict(route.fields)})
    if route.prefixes:
        items.append({"type": "detection_item_failure", "field_name_conditions": [
            {"type": "include_fields", "fields": sorted(route.prefixes)}],
            "message": f"values of {', '.join(sorted(route.prefixes))} are written differently in the "
                       f"{logsource['service']} log (device paths) and no pipeline rewrites them"})
    items.append({"type": "change_logsource", **logsource})
    return ProcessingPipeline.from_dict({"name": f"rpcwatch route: {logsource['service']}", "priority": 10,
                                         "transformations": items})


def _documents(files: Iterable[Path],
               config: Config) -> tuple[list[SigmaRule | SigmaCorrelationRule], list[Conversion]]:
    """The rules and correlations of the files, with the configured networks applied;
    the ones that cannot be parsed or configured as problems."""
    documents, problems = [], []
    for file in files:
        for document in parse_file(file):
            if isinstance(document, RuleProblem):
                problems.append(Conversion(document.title or str(file), document.id, problem=document.reason))
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


def _backend_conversion(document, backend: Backend, target_: Target) -> Conversion:
    title, rule_id = document.title, str(document.id or "")
    try:
        if isinstance(document, SigmaCorrelationRule):
            queries = backend.convert_correlation_rule(document)
        else:
            queries = backend.convert_rule(document)
    except NotImplementedError:
        return Conversion(title, rule_id, problem=f"{target_.description} does not support this rule type")
    except SigmaError as exc:
        return Conversion(title, rule_id, problem=str(exc))
    return Conversion(title, rule_id, tuple(q if isinstance(q, str) else str(q) for q in queries))


def pipeline(file_name: str | None) -> ProcessingPipeline:
    """A processing pipeline from ``pipelines/`` (a new object: pipelines keep state)."""
    if file_name is None:
        return ProcessingPipeline()
    return ProcessingPipeline.from_yaml(_pipeline_text(file_name))


@cache
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
