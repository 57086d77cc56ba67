"""Load Sigma rules (bundled and the user's), filters and correlations: from the cache of
compiled rule sets, or parsed and compiled by :mod:`rpcwatch.sigma.parse` (pySigma).

All documents are parsed first and merged, so a correlation may reference rules in other
files and a filter may tune rules anywhere. A rule, filter or correlation that cannot be
parsed, resolved or compiled is kept with its reason and the others run: one bad file
never stops a rule set (SigmaHQ's repository layout loads as it is).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from rpcwatch.config import Config
from rpcwatch.datafiles import FAST_LOADER
from rpcwatch.schema import LiteralSet
from rpcwatch.sigma import rulecache
from rpcwatch.sigma.compiled import CompiledRule
from rpcwatch.sigma.correlation import CompiledCorrelation
from rpcwatch.sigma.logsources import BoundRule

RULE_SUFFIXES = (".yml", ".yaml")

#: Aliases (``*name``) one rule document may use. An alias is a reference: nested aliases
#: let a few hundred bytes stand for gigabytes once pySigma expands a rule's lists ("billion
#: laughs"). SigmaHQ's rules use none.
MAX_YAML_ALIASES = 100
#: Nodes (mappings, lists, scalars) one rule document may hold with every alias expanded.
#: SigmaHQ's largest rule (a list of vulnerable drivers) has 4,475.
MAX_YAML_NODES = 100_000


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
    #: the rules on the tables their log sources route to
    by_table: dict[str, list[BoundRule]] = field(default_factory=dict)
    #: per table, literals one of which every record a rule there matches holds (prefilter)
    literals: dict[str, LiteralSet | None] = field(default_factory=dict)


def bundled_rule_files() -> list[Path]:
    folder = resources.files("rpcwatch") / "rules"
    return sorted(Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(RULE_SUFFIXES))


def rule_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Rule files under the given paths (directories recursively, sorted, hidden skipped)."""
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            yield path
            continue
        found = []
        for folder, folders, names in os.walk(path):  # a third of rglob's time on SigmaHQ's tree
            folders[:] = [name for name in folders if not name.startswith(".")]
            found += [Path(folder, name) for name in names if name.endswith(RULE_SUFFIXES) and not name.startswith(".")]
        yield from sorted(found)


def load_rule_set(paths: Iterable[str | Path] = (), config: Config | None = None,
                  bundled: bool = True, filters: Iterable[str | Path] = ()) -> RuleSet:
    """The bundled rules (unless ``bundled`` is False), the rules under ``paths`` and the
    filter documents under ``filters``, compiled; from the cache of compiled rule sets
    when these files and this configuration were compiled before (:mod:`rulecache`)."""
    config = config or Config()
    files = [*(bundled_rule_files() if bundled else []), *rule_files(paths)]
    filter_files = list(rule_files(filters))
    key = rule_set_key(files, filter_files, config) if rulecache.enabled() else None
    cached = rulecache.load(key) if key else None
    if isinstance(cached, RuleSet):
        return cached
    from rpcwatch.sigma.parse import compile_rule_set  # pySigma: only when the cache has no entry

    rule_set = compile_rule_set(files, filter_files, config)
    if key:
        rulecache.store(key, rule_set)
    return rule_set


def rule_set_key(files: list[Path], filter_files: list[Path], config: Config) -> str | None:
    """The cache key of the rule set these files compile to under this configuration."""
    return rulecache.cache_key([*files, *filter_files], {
        "internal": config.internal, "non_routable": config.non_routable,
        "placeholders": sorted(config.placeholders.items()), "rule_files": len(files)})  # the rest are filters


def load_yaml_documents(text: str, path: str) -> tuple[list, list[RuleProblem]]:
    """The documents of a YAML text, and the ones refused. Each document is checked against
    :data:`MAX_YAML_ALIASES` and :data:`MAX_YAML_NODES` as a node graph, before it is built
    into Python objects, so an alias bomb costs nothing to refuse.

    libyaml's parser (``FAST_LOADER``) does the parsing: SigmaCollection.from_yaml uses
    PyYAML's pure-Python one, which spends most of the time of loading thousands of rules."""
    loader = FAST_LOADER(text)
    documents: list = []
    refused: list[RuleProblem] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            assert node is not None, "check_node() said a document follows"
            reason = _over_yaml_limits(node)
            if reason is None:
                documents.append(loader.construct_document(node))
            else:
                refused.append(RuleProblem(path, f"YAML document {len(documents) + len(refused) + 1} refused: "
                                                 f"{reason}", _top_scalar(node, "title"), _top_scalar(node, "id")))
    finally:
        loader.dispose()
    return documents, refused


def _top_scalar(node: yaml.Node, name: str) -> str:
    """A top-level scalar of a composed document (a refused rule's title and id)."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == name and isinstance(value, yaml.ScalarNode):
                return value.value
    return ""


def _over_yaml_limits(root: yaml.Node) -> str | None:
    """Why a composed document exceeds the limits, or None. Nodes are visited in document
    order, so an anchored node is complete before any alias to it; each node's expanded
    size is computed once (aliases share nodes), so this is linear in the text."""
    expanded: dict[int, int] = {}
    on_path: set[int] = set()
    aliases = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finishing = stack.pop()
        key = id(node)
        if finishing:
            on_path.discard(key)
            expanded[key] = 1 + sum(expanded[id(child)] for child in _child_nodes(node))
            if expanded[key] > MAX_YAML_NODES:
                return f"more than {MAX_YAML_NODES:,} YAML nodes with its aliases expanded (MAX_YAML_NODES)"
        elif key in on_path:
            return "a YAML alias refers to a node that contains it (recursive alias)"
        elif key in expanded:
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                return f"more than {MAX_YAML_ALIASES} YAML aliases (MAX_YAML_ALIASES)"
        else:
            on_path.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(_child_nodes(node)))
    return None


def _child_nodes(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def describe_logsource(logsource) -> str:
    """``product/category/service`` of a pySigma logsource or a plain mapping."""
    get = logsource.get if isinstance(logsource, dict) else lambda key: getattr(logsource, key, None)
    return "/".join(str(part) for part in (get(k) for k in ("product", "category", "service")) if part)
