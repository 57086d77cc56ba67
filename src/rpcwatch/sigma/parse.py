"""Parse and compile rule files with pySigma: documents, filters and correlations merged,
the configured networks applied, each rule compiled and bound to its tables.

All documents are parsed first and merged, so a correlation may reference rules in other
files and a filter may tune rules anywhere. A rule, filter or correlation that cannot be
parsed, resolved or compiled is kept with its reason and the others run: one bad file
never stops a rule set (SigmaHQ's repository layout loads as it is).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.filters import SigmaFilter
from sigma.modifiers import SigmaCIDRModifier
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaLogSource, SigmaRule
from sigma.types import SigmaCIDRExpression, SigmaRuleLocation

from rpcwatch.config import Config
from rpcwatch.sigma.compiler import RuleError, compile_rule
from rpcwatch.sigma.correlation import compile_correlation
from rpcwatch.sigma.literals import literals_for_table
from rpcwatch.sigma.loader import RuleProblem, RuleSet, describe_logsource, load_yaml_documents
from rpcwatch.sigma.logsources import bind

#: what taking one rule, filter or correlation further may raise: its own reason, and
#: pySigma's plain Python errors on documents whose parts have the wrong shape (a level
#: that is a number, a list where a mapping belongs); either way only that document is lost
RULE_ERRORS = (RuleError, SigmaError, ValueError, KeyError, TypeError, AttributeError)


def compile_rule_set(files: list[Path], filter_files: list[Path], config: Config) -> RuleSet:
    """Parse, compile and bind rule files and filter files (the filters tune the rules)."""
    rule_set = _compiled(files, filter_files, config)
    _bind(rule_set)
    _drop_unrunnable_correlations(rule_set)
    rule_set.literals = {table: literals_for_table(bound.parts() for bound in rules)
                         for table, rules in rule_set.by_table.items()}
    for rules in rule_set.by_table.values():
        for bound in rules:
            bound.clauses  # noqa: B018 - computed now, so the rule cache holds them
    return rule_set


def _bind(rule_set: RuleSet) -> None:
    """Each rule on the tables its logsource routes to; a rule that routes nowhere is a problem."""
    runnable = []
    for rule in rule_set.rules:
        try:
            bound = bind(rule)
        except RuleError as exc:
            rule_set.problems.append(RuleProblem(rule.path, str(exc), rule.title, rule.id, rule.level,
                                                 describe_logsource(dict(rule.logsource))))
            continue
        runnable.append(rule)
        for item in bound:
            rule_set.by_table.setdefault(item.table, []).append(item)
    rule_set.rules = runnable


def _drop_unrunnable_correlations(rule_set: RuleSet) -> None:
    """A correlation runs only when every rule it references (through chains) does."""
    runnable = {rule.key for rule in rule_set.rules}
    pending = list(rule_set.correlations)
    kept: list = []
    changed = True
    while changed:
        changed = False
        for correlation in list(pending):
            if all(key in runnable for key in correlation.rules):
                runnable.add(correlation.key)
                kept.append(correlation)
                pending.remove(correlation)
                changed = True
    for correlation in pending:
        rule_set.problems.append(RuleProblem(correlation.path, "correlation: a referenced rule is not runnable",
                                             correlation.title, correlation.id, correlation.level))
    rule_set.correlations = kept


def _compiled(files: list[Path], filter_files: list[Path], config: Config) -> RuleSet:
    rule_set = RuleSet()
    documents: list[SigmaRule | SigmaCorrelationRule] = []
    filter_documents: list[SigmaFilter] = []
    for file in [*files, *filter_files]:
        for document in parse_file(file):
            if isinstance(document, RuleProblem):
                rule_set.problems.append(document)
            elif isinstance(document, SigmaFilter):
                filter_documents.append(document)
            else:
                documents.append(document)
    collection = SigmaCollection([*documents], resolve_references=False)
    correlations = {id(c) for c in _resolve_correlations(collection, rule_set)}
    _apply_filters(documents, filter_documents, rule_set)
    keys = _keys(documents)
    for document in documents:
        path = _path_of(document)
        try:
            if isinstance(document, SigmaCorrelationRule):
                if id(document) in correlations:
                    rule_set.correlations.append(compile_correlation(document, keys.__getitem__, path))
                continue
            apply_networks(document, config)
            rule_set.rules.append(compile_rule(document, config.placeholders, path=path, key=keys[document]))
        except RULE_ERRORS as exc:
            rule_set.problems.append(_problem(path, document, str(exc)))
    return rule_set


def _keys(documents) -> _IdentityKeys:
    keys = _IdentityKeys()
    for index, document in enumerate(documents):
        keys[document] = str(document.id) if document.id else f"{document.title}#{index}"
    return keys


class _IdentityKeys(dict):
    """Rule objects are not hashable by value: key them by identity."""

    def __setitem__(self, rule, key) -> None:
        super().__setitem__(id(rule), key)

    def __getitem__(self, rule):
        return super().__getitem__(id(rule))


def _resolve_correlations(collection: SigmaCollection, rule_set: RuleSet) -> list[SigmaCorrelationRule]:
    """Resolve each correlation's references on its own, so one dangling reference only
    costs that correlation."""
    resolved = []
    for document in collection.rules:
        if not isinstance(document, SigmaCorrelationRule):
            continue
        try:
            document.resolve_rule_references(collection)
        except RULE_ERRORS as exc:
            rule_set.problems.append(_problem(_path_of(document), document, f"correlation: {exc}"))
            continue
        resolved.append(document)
    return resolved


def _apply_filters(documents: list, filters: list[SigmaFilter], rule_set: RuleSet) -> None:
    """Sigma filters AND-NOT their selection into the rules they name (or all rules of their
    logsource for ``rules: any``); pySigma rewrites the rules' detections."""
    for sigma_filter in filters:
        tuned = 0
        for index, document in enumerate(documents):
            if not isinstance(document, SigmaRule):
                continue
            try:
                if sigma_filter._should_apply_on_rule(document):
                    documents[index] = sigma_filter.apply_on_rule(document)
                    tuned += 1
            except RULE_ERRORS as exc:
                rule_set.problems.append(_problem(_path_of(sigma_filter), sigma_filter, f"filter: {exc}"))
        rule_set.filters[sigma_filter.title] = tuned


def _path_of(document) -> str:
    source = getattr(document, "source", None)
    return str(source.path) if source is not None and source.path else ""


def parse_file(file: Path) -> Iterator[SigmaRule | SigmaCorrelationRule | SigmaFilter | RuleProblem]:
    """The file's rules, correlations and filters, and a problem for each one that cannot be read."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        yield RuleProblem(str(file), f"cannot read rule file: {exc}")
        return
    try:
        documents, refused = load_yaml_documents(text, str(file))
    except yaml.YAMLError as exc:
        yield RuleProblem(str(file), f"not a Sigma document: {exc}")
        return
    yield from refused
    for collection in _collections(documents, file):
        if isinstance(collection, RuleProblem):
            yield collection
            continue
        for error in collection.errors:
            yield RuleProblem(str(file), str(error))
        for document in [*collection.rules, *collection.filters]:
            if document.errors:
                yield _problem(str(file), document, "; ".join(str(e) for e in document.errors))
            else:
                yield document


def _collections(documents: list, file: Path) -> Iterator[SigmaCollection | RuleProblem]:
    """pySigma's parse of a file's documents: all together (legacy ``action: global``
    documents apply to the ones after them); when that fails, one document at a time, so
    only the documents pySigma cannot take are lost."""
    location = SigmaRuleLocation(file)
    try:
        yield SigmaCollection.from_dicts(documents, collect_errors=True, source=location, collect_filters=True,
                                         resolve_references=False)
        return
    except Exception:  # pySigma's errors and its bugs on odd input alike: find the documents
        pass
    for number, document in enumerate(documents, start=1):
        try:
            yield SigmaCollection.from_dicts([document], collect_errors=True, source=location,
                                             collect_filters=True, resolve_references=False)
        except Exception as exc:
            title = document.get("title", "") if isinstance(document, dict) else ""
            yield RuleProblem(str(file), f"YAML document {number} is not a Sigma document: {exc}",
                              title if isinstance(title, str) else "")


def _problem(path: str, rule, reason: str) -> RuleProblem:
    """A problem named after its rule. A rule with errors may hold anything where its
    title, level or logsource should be (pySigma keeps what it could not parse)."""
    logsource = getattr(rule, "logsource", None)
    level = getattr(rule, "level", None)
    return RuleProblem(
        path=path, reason=reason, title=_text(getattr(rule, "title", "")), id=_text(getattr(rule, "id", "")),
        level=_text(getattr(level, "name", level)).lower(),
        logsource=describe_logsource(logsource) if isinstance(logsource, (dict, SigmaLogSource)) else "")


def _text(value) -> str:
    return "" if value is None else str(value)


def apply_networks(rule: SigmaRule, config: Config) -> None:
    """Replace the CIDR lists of the detection items a rule marks as holding the
    configured networks (custom attribute ``rpcwatch.networks``)."""
    custom = rule.custom_attributes.get("rpcwatch")
    if not isinstance(custom, dict) or not isinstance(custom.get("networks"), dict):
        return
    lists = {"internal": config.internal, "non_routable": config.non_routable}
    for list_name, detection_names in custom["networks"].items():
        if list_name not in lists:
            raise RuleError(f"rpcwatch.networks: unknown network list {list_name!r}")
        for name in detection_names or ():
            detection = rule.detection.detections.get(name)
            if detection is None:
                raise RuleError(f"rpcwatch.networks: no detection named {name!r}")
            for item in _cidr_items(detection):
                item.value = [SigmaCIDRExpression(str(net)) for net in lists[list_name].networks]
    _drop_internal_from_non_routable(rule, custom["networks"])


def _drop_internal_from_non_routable(rule: SigmaRule, named: dict) -> None:
    """The two lists are OR-ed (``not 1 of filter_*``) and the non-routable list holds the
    private ranges too: on a field both test, the non-routable list leaves out what the
    internal one has, so converted queries do not name a network twice."""
    def items(list_name: str) -> list[SigmaDetectionItem]:
        return [item for name in named.get(list_name) or () for item in _cidr_items(rule.detection.detections[name])]

    internal: dict[str | None, set[str]] = {}  # by field; None for a keyword item
    for item in items("internal"):
        internal.setdefault(item.field, set()).update(str(value) for value in item.value)
    for item in items("non_routable"):
        kept = [value for value in item.value if str(value) not in internal.get(item.field, ())]
        item.value = kept or item.value


def _cidr_items(detection: SigmaDetection) -> Iterator[SigmaDetectionItem]:
    for item in detection.detection_items:
        if isinstance(item, SigmaDetection):
            yield from _cidr_items(item)
        elif isinstance(item, SigmaDetectionItem) and any(issubclass(m, SigmaCIDRModifier) for m in item.modifiers):
            yield item
