"""Load Sigma rules (bundled and the user's), filters and correlations; apply the configured
networks; compile.

All documents are parsed first and merged, so a correlation may reference rules in other
files and a filter may tune rules anywhere. A rule, filter or correlation that cannot be
parsed, resolved or compiled is kept with its reason and the others run: one bad file
never stops a rule set (SigmaHQ's repository layout loads as it is).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.filters import SigmaFilter
from sigma.modifiers import SigmaCIDRModifier
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaRule
from sigma.types import SigmaCIDRExpression, SigmaRuleLocation

from rpcwatch.config import Config
from rpcwatch.datafiles import FAST_LOADER
from rpcwatch.networks import NetworkSet
from rpcwatch.sigma.compiler import CompiledRule, RuleError, compile_rule
from rpcwatch.sigma.correlation import CompiledCorrelation, compile_correlation

RULE_SUFFIXES = (".yml", ".yaml")

#: SigmaCollection.from_yaml parses with PyYAML's pure-Python loader, which spends most of
#: the time of loading thousands of rules; libyaml's (FAST_LOADER) is used instead


@dataclass(frozen=True)
class RuleProblem:
    """A rule (or file) that does not run, and why."""

    path: str
    reason: str
    title: str = ""
    id: str = ""
    level: str = ""
    logsource: str = ""


@dataclass
class RuleSet:
    rules: list[CompiledRule] = field(default_factory=list)
    correlations: list[CompiledCorrelation] = field(default_factory=list)
    problems: list[RuleProblem] = field(default_factory=list)
    #: filters that were loaded, by title, with the number of rules each tuned
    filters: dict[str, int] = field(default_factory=dict)


def bundled_rule_files() -> list[Path]:
    folder = resources.files("rpcwatch") / "rules"
    return sorted(Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(RULE_SUFFIXES))


def rule_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Rule files under the given paths (directories recursively, sorted, hidden skipped)."""
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.suffix in RULE_SUFFIXES and file.is_file() and not any(
                        part.startswith(".") for part in file.relative_to(path).parts):
                    yield file
        else:
            yield path


def load_rule_set(paths: Iterable[str | Path] = (), config: Config | None = None,
                  bundled: bool = True, filters: Iterable[str | Path] = ()) -> RuleSet:
    """Parse and compile the bundled rules (unless ``bundled`` is False), the rules under
    ``paths`` and the filter documents under ``filters``."""
    config = config or Config()
    rule_set = RuleSet()
    documents: list[SigmaRule | SigmaCorrelationRule] = []
    filter_documents: list[SigmaFilter] = []
    for file in [*(bundled_rule_files() if bundled else []), *rule_files(paths), *rule_files(filters)]:
        for document, problem in parse_file(file):
            if problem is not None:
                rule_set.problems.append(problem)
            elif isinstance(document, SigmaFilter):
                filter_documents.append(document)
            else:
                documents.append(document)
    collection = SigmaCollection(documents, resolve_references=False)
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
        except (RuleError, SigmaError, ValueError, KeyError) as exc:
            rule_set.problems.append(_problem(path, document, str(exc)))
    return rule_set


def _keys(documents) -> "_IdentityKeys":
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
        except SigmaError as exc:
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
            except SigmaError as exc:
                rule_set.problems.append(_problem(_path_of(sigma_filter), sigma_filter, f"filter: {exc}"))
        rule_set.filters[sigma_filter.title] = tuned


def _path_of(document) -> str:
    source = getattr(document, "source", None)
    return str(source.path) if source is not None and source.path else ""


def parse_file(file: Path) -> Iterator[tuple[object | None, RuleProblem | None]]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        yield None, RuleProblem(str(file), f"cannot read rule file: {exc}")
        return
    try:
        collection = SigmaCollection.from_dicts(list(yaml.load_all(text, Loader=FAST_LOADER)), collect_errors=True,
                                                source=SigmaRuleLocation(file), collect_filters=True,
                                                resolve_references=False)
    except Exception as exc:  # YAML errors and pySigma errors alike end in a listed problem
        yield None, RuleProblem(str(file), f"not a Sigma document: {exc}")
        return
    for error in collection.errors:
        yield None, RuleProblem(str(file), str(error))
    for document in [*collection.rules, *collection.filters]:
        if document.errors:
            yield None, _problem(str(file), document, "; ".join(str(e) for e in document.errors))
        else:
            yield document, None


def _problem(path: str, rule, reason: str) -> RuleProblem:
    logsource = getattr(rule, "logsource", None)
    level = getattr(rule, "level", None)
    return RuleProblem(
        path=path, reason=reason, title=getattr(rule, "title", "") or "",
        id=str(getattr(rule, "id", "") or ""), level=level.name.lower() if level else "",
        logsource=describe_logsource(logsource) if logsource else "")


def describe_logsource(logsource) -> str:
    """``product/category/service`` of a pySigma logsource or a plain mapping."""
    get = logsource.get if isinstance(logsource, dict) else lambda key: getattr(logsource, key, None)
    return "/".join(part for part in (get(k) for k in ("product", "category", "service")) if part)


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
            _replace_cidrs(detection, lists[list_name])


def _replace_cidrs(detection: SigmaDetection, networks: NetworkSet) -> None:
    for item in detection.detection_items:
        if isinstance(item, SigmaDetection):
            _replace_cidrs(item, networks)
        elif isinstance(item, SigmaDetectionItem) and any(
                issubclass(m, SigmaCIDRModifier) for m in item.modifiers):
            item.value = [SigmaCIDRExpression(str(net)) for net in networks.networks]
