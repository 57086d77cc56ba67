"""``rpcwatch rules validate``: pySigma's validators, plus whether rpcwatch can run each rule.

pySigma's ``attacktag`` and ``d3_fendtag`` validators download MITRE data at run time; they
are left out so validation works offline (``tag_format`` still checks every tag's shape).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.rule import SigmaRule
from sigma.validation import SigmaValidator
from sigma.validators.core import validators

from rpcwatch.sigma.loader import load_yaml_documents, rule_files

ONLINE_VALIDATORS = frozenset({"attacktag", "d3_fendtag"})


@dataclass(frozen=True)
class Finding:
    path: str
    title: str
    id: str
    check: str
    severity: str  # informational, low, medium, high, error
    message: str


def validate_rules(paths: Iterable[str | Path]) -> list[Finding]:
    files = list(rule_files(paths))
    findings: list[Finding] = []
    documents = []
    for file in files:
        try:
            dicts, refused = load_yaml_documents(file.read_text(encoding="utf-8"), str(file))
            collection = SigmaCollection.from_dicts(dicts, collect_errors=True, collect_filters=True,
                                                    resolve_references=False)
        except Exception as exc:  # YAML or pySigma error: the file is the finding
            findings.append(Finding(str(file), "", "", "parse", "error", f"not a Sigma document: {exc}"))
            continue
        findings.extend(Finding(p.path, p.title, p.id, "parse", "error", p.reason) for p in refused)
        for error in collection.errors:
            findings.append(Finding(str(file), "", "", "parse", "error", str(error)))
        for rule in collection.rules:
            for error in rule.errors:
                findings.append(Finding(str(file), rule.title, str(rule.id or ""), "parse", "error", str(error)))
            documents.append((file, rule))
    validator = SigmaValidator([cls for name, cls in validators.items() if name not in ONLINE_VALIDATORS])
    by_rule = {id(rule): file for file, rule in documents}
    collection = SigmaCollection([rule for _, rule in documents], resolve_references=False)
    # pySigma declares the argument an Iterator[SigmaRule]; it iterates its own collections
    for issue in validator.validate_rules(collection):  # type: ignore[arg-type]
        subjects: list[SigmaRule | SigmaCorrelationRule | None] = [*issue.rules] or [None]
        for subject in subjects:
            findings.append(Finding(str(by_rule.get(id(subject), "")), getattr(subject, "title", ""),
                                    str(getattr(subject, "id", "") or ""), _check_name(issue),
                                    issue.severity.name.lower(), issue.description))
    findings.extend(_runnable_findings(files))
    return findings


def _check_name(issue) -> str:
    name = type(issue).__name__
    return name[:-len("Issue")] if name.endswith("Issue") else name


def _runnable_findings(files: list[Path]) -> list[Finding]:
    """Rules that load but cannot run (bound to no table, an unsupported feature)."""
    from rpcwatch.sigma.loader import load_rule_set

    rule_set = load_rule_set([str(f) for f in files], bundled=False)
    not_rules = ("not a Sigma document", "cannot read", "YAML document")
    return [Finding(p.path, p.title, p.id, "rpcwatch", "error", f"not runnable: {p.reason}")
            for p in rule_set.problems if not p.reason.startswith(not_rules) and p.title]
