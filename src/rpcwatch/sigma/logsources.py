"""Log-source routing, read from ``mappings/logsources.yml`` (data, not code).

A rule's ``logsource`` selects routes; each route names a table, an optional extra
selection (``where``) and field/value renames. Binding a rule to a route yields the
expression an engine runs on that table.

A route that declares ``absent`` (the fields its table never has) carries a rule written
for another log to a table of other names: it takes a rule only when every field the rule
reads is renamed or declared absent, so a rule is never run on a table that would quietly
drop its tests. On such a route a test on an absent field is false (an unset value: only
``null`` and ``|exists: false`` hold), and keyword rules, which search the record's own
text, are not taken.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Any

from rpcwatch.datafiles import load_yaml
from rpcwatch.sigma.compiled import CompiledRule, RuleError
from rpcwatch.sigma.expr import (
    FALSE,
    TRUE,
    And,
    ExistsTest,
    Expr,
    FieldRefTest,
    Match,
    Not,
    NullTest,
    Or,
    Pattern,
    StringTest,
    all_of,
    any_of,
    fields_of,
    has_keywords,
    negate,
    plain_text,
)
from rpcwatch.sigma.literals import Clause, all_clauses, field_clauses


@dataclass(frozen=True)
class Route:
    table: str
    where: Expr | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: per rule field: value start (lower case) -> the pattern that replaces it
    prefixes: Mapping[str, Mapping[str, Pattern]] = field(default_factory=dict)
    #: rule fields the table never has; None: the route takes any rule (see the module doc)
    absent: frozenset[str] | None = None
    #: rule fields (lower case) the route's events lack: such a rule is not bound here
    unsupported: frozenset[str] = frozenset()
    #: ``where`` as written (detection syntax), for converters that add it to a rule
    selection: Mapping[str, Any] = field(default_factory=dict)

    def refusal(self, rule: CompiledRule) -> str | None:
        """Why this route does not take the rule, or None when it does."""
        lacking = sorted(self.unsupported & {name.lower() for name in fields_of(rule.expr)})
        if lacking:
            return f"{self.table}: the events of this route have no field {', '.join(lacking)}"
        if self.absent is None:
            return None
        if has_keywords(rule.expr):
            return f"{self.table}: keyword searches need the rule's own log"
        unknown = sorted(set(fields_of(rule.expr)) - set(self.fields) - self.absent)
        if unknown:
            return f"{self.table} has no field {', '.join(unknown)}"
        return None


@dataclass(frozen=True, eq=False)
class BoundRule:
    """A rule as it runs on one table: ``expr`` is the whole condition; when a route adds a
    selection, ``where`` is that selection and ``body`` the rule's own part, so engines can
    evaluate many rules that share a ``where`` on the rows that pass it once.

    Compared by identity: a rule list is a cache key for the engines (its queries, its
    batch shape), cheap to hash and never mistaken for another rule list."""

    rule: CompiledRule
    table: str
    expr: Expr
    #: rule field -> table column, where the route renames fields
    renames: Mapping[str, str] = field(default_factory=dict)
    where: Expr | None = None
    body: Expr | None = None

    def parts(self) -> tuple[Expr | None, Expr]:
        return (self.where, self.body) if self.where is not None and self.body is not None else (None, self.expr)

    @cached_property
    def clauses(self) -> tuple[Clause, ...] | None:
        """The literals a matching record's values hold, as clauses that must all be
        satisfied, the route's selection included (:func:`~rpcwatch.sigma.literals.field_clauses`).
        Computed when the rule set is compiled, so the rule cache keeps them."""
        where, body = self.parts()
        return all_clauses(field_clauses(where) if where is not None else None, field_clauses(body))


def _load_yaml(name: str) -> dict:
    return load_yaml("rpcwatch.sigma", "mappings", name)


def _selection(definition: Mapping) -> Expr:
    from rpcwatch.sigma.compiler import compile_selection  # pySigma: only when routes are built

    return compile_selection(definition)


def _pattern(text: str) -> Pattern:
    from rpcwatch.sigma.compiler import pattern_of

    return pattern_of(text)


@lru_cache(maxsize=1)
def _logsource_entries() -> tuple[tuple[Mapping[str, str], tuple[Route, ...]], ...]:
    entries = []
    for entry in _load_yaml("logsources.yml")["logsources"]:
        routes = tuple(
            Route(table=route["table"],
                  where=_selection(route["where"]) if route.get("where") else None,
                  fields=route.get("fields", {}) or {},
                  values={k: {str(a).lower(): str(b) for a, b in v.items()}
                          for k, v in (route.get("values", {}) or {}).items()},
                  prefixes={k: {str(a).lower(): _pattern(str(b)) for a, b in v.items()}
                            for k, v in (route.get("prefixes", {}) or {}).items()},
                  absent=frozenset(route["absent"] or ()) if "absent" in route else None,
                  unsupported=frozenset(name.lower() for name in route.get("unsupported", ()) or ()),
                  selection=route.get("where") or {})
            for route in entry["routes"])
        entries.append((entry["match"], routes))
    return tuple(entries)


def routes_for(logsource: Mapping[str, str | None]) -> tuple[Route, ...]:
    """The routes of the first entry whose every ``match`` key the rule sets to the same
    value (a ``null`` key: the rule leaves it out)."""
    given = {key: value.lower() for key, value in logsource.items() if value}
    for match, routes in _logsource_entries():
        if all(given.get(key) == (None if value is None else str(value).lower()) for key, value in match.items()):
            return tuple(_format_route(route, given) for route in routes)
    return ()


def route_service(route: Route) -> str | None:
    """The logsource service whose own entry reads the route's channel (the Security 4688
    route of ``process_creation``: ``security``), else None."""
    return _services_by_selection().get((route.table, _channel(route.selection)))


@lru_cache(maxsize=1)
def _services_by_selection() -> Mapping[tuple[str, str | None], str]:
    services: dict[tuple[str, str | None], str] = {}
    for match, routes in _logsource_entries():
        if set(match) == {"product", "service"} and len(routes) == 1:
            channel = routes[0].selection.get("Channel")
            if isinstance(channel, str):
                services[(routes[0].table, channel)] = str(match["service"])
    return services


def runs_on(route: Route, rule: CompiledRule) -> bool:
    """Whether the route takes the rule (see :meth:`Route.refusal`)."""
    return route.refusal(rule) is None


def _channel(selection: Mapping[str, Any]) -> str | None:
    """The one channel a selection reads (Windows log sources are told apart by it)."""
    return selection.get("Channel") if isinstance(selection.get("Channel"), str) else None


def _format_route(route: Route, given: Mapping[str, str]) -> Route:
    if "{" not in route.table:
        return route
    try:
        return replace(route, table=route.table.format(**given))
    except KeyError:
        return replace(route, table="")


def bind(rule: CompiledRule) -> list[BoundRule]:
    """The rule on each table its logsource routes to and that takes it; raises
    RuleError when none does."""
    verdicts = [(route, route.refusal(rule)) for route in routes_for(rule.logsource) if route.table]
    routes = [route for route, refusal in verdicts if refusal is None]
    refusals = [refusal for _, refusal in verdicts if refusal is not None]
    if not routes:
        described = ", ".join(f"{k}: {v}" for k, v in rule.logsource.items() if v) or "empty"
        why = f": {'; '.join(refusals)}" if refusals else ""
        raise RuleError(f"no table for logsource ({described}){why}")
    bound = []
    for route in routes:
        body = _rename(rule.expr, route)
        if route.where is None:
            bound.append(BoundRule(rule, route.table, body, route.fields))
        else:
            bound.append(BoundRule(rule, route.table, all_of([route.where, body]), route.fields, route.where, body))
    return bound


def _rename(expr: Expr, route: Route) -> Expr:
    if not route.fields and not route.values and not route.prefixes and not route.absent:
        return expr
    if isinstance(expr, Match):
        if route.absent and expr.field in route.absent:
            return _on_unset(expr)
        test = expr.test
        mapping = route.values.get(expr.field)
        if mapping and isinstance(test, StringTest):
            text = plain_text(test.pattern)
            if text is not None and text.lower() in mapping:
                test = StringTest((mapping[text.lower()],), test.case_sensitive)
        if route.prefixes.get(expr.field) and isinstance(test, StringTest):
            test = _rewrite_prefix(test, route.prefixes[expr.field])
        if isinstance(test, FieldRefTest):
            test = FieldRefTest(route.fields.get(test.other, test.other), test.starts_with, test.ends_with)
        return Match(route.fields.get(expr.field, expr.field), test)
    if route.absent:  # tests on absent fields became constants: fold them away
        return _folded(expr, route)
    if isinstance(expr, And):
        return And(tuple(_rename(item, route) for item in expr.items))
    if isinstance(expr, Or):
        return Or(tuple(_rename(item, route) for item in expr.items))
    if isinstance(expr, Not):
        return Not(_rename(expr.item, route))
    return expr  # Keyword and Const are not about fields


def _folded(expr: Expr, route: Route) -> Expr:
    if isinstance(expr, And):
        return all_of(_rename(item, route) for item in expr.items)
    if isinstance(expr, Or):
        return any_of(_rename(item, route) for item in expr.items)
    if isinstance(expr, Not):
        return negate(_rename(expr.item, route))
    return expr


def _on_unset(match: Match) -> Expr:
    """A test on a field the table never has, as it reads on an unset value."""
    if isinstance(match.test, NullTest):
        return TRUE
    if isinstance(match.test, ExistsTest):
        return FALSE if match.test.exists else TRUE
    return FALSE


def _rewrite_prefix(test: StringTest, prefixes: Mapping[str, Pattern]) -> StringTest:
    head = test.pattern[0] if test.pattern and isinstance(test.pattern[0], str) else ""
    for start, replacement in prefixes.items():
        if head.lower().startswith(start):
            rest = head[len(start):]
            return StringTest(replacement + ((rest,) if rest else ()) + tuple(test.pattern[1:]), test.case_sensitive)
    return test
