"""Load Sigma rules (bundled and the user's), apply the configured networks, compile them.

A rule that cannot be parsed or compiled is kept with its reason, and the others run:
one bad file never stops a rule set (SigmaHQ's repository layout loads as it is).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator

from sigma.collection import SigmaCollection
from sigma.exceptions import SigmaError
from sigma.modifiers import SigmaCIDRModifier
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaRule
from sigma.types import SigmaRuleLocation
from sigma.types import SigmaCIDRExpression

from rpcwatch.config import Config
from rpcwatch.networks import NetworkSet
from rpcwatch.sigma.compiler import CompiledRule, RuleError, compile_rule

RULE_SUFFIXES = (".yml", ".yaml")


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
    problems: list[RuleProblem] = field(default_factory=list)


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
                  bundled: bool = True) -> RuleSet:
    """Parse and compile the bundled rules (unless ``bundled`` is False) and the rules under ``paths``."""
    config = config or Config()
    rule_set = RuleSet()
    files = [*(bundled_rule_files() if bundled else []), *rule_files(paths)]
    for file in files:
        for rule, problem in _parse_file(file):
            if problem is not None:
                rule_set.problems.append(problem)
                continue
            try:
                apply_networks(rule, config)
                rule_set.rules.append(compile_rule(rule, config.placeholders, path=str(file)))
            except (RuleError, SigmaError, ValueError) as exc:
                rule_set.problems.append(_problem(file, rule, str(exc)))
    return rule_set


def _parse_file(file: Path) -> Iterator[tuple[SigmaRule | None, RuleProblem | None]]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        yield None, RuleProblem(str(file), f"cannot read rule file: {exc}")
        return
    try:
        collection = SigmaCollection.from_yaml(text, collect_errors=True, source=SigmaRuleLocation(file))
    except Exception as exc:  # YAML errors and pySigma errors alike end in a listed problem
        yield None, RuleProblem(str(file), f"not a Sigma document: {exc}")
        return
    if collection.errors:
        for error in collection.errors:
            yield None, RuleProblem(str(file), str(error))
    for rule in collection.rules:
        if not isinstance(rule, SigmaRule):
            kind = type(rule).__name__.replace("Sigma", "").lower()
            yield None, _problem(file, rule, f"{kind} documents are not supported yet")
            continue
        if rule.errors:
            yield None, _problem(file, rule, "; ".join(str(e) for e in rule.errors))
            continue
        yield rule, None


def _problem(file: Path, rule, reason: str) -> RuleProblem:
    logsource = getattr(rule, "logsource", None)
    level = getattr(rule, "level", None)
    return RuleProblem(
        path=str(file), reason=reason, title=getattr(rule, "title", "") or "",
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
