"""Sigma rules (parsed by pySigma) to the engine-neutral expression tree, once per rule.

pySigma already applies the value modifiers and resolves the condition (``1 of``,
``all of them``, precedence) into a tree of AND/OR/NOT over field/value items; this
module translates that tree and rejects, with a reason, what rpcwatch cannot run.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import re2
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.rule import SigmaDetection, SigmaDetections, SigmaRule
from sigma.types import (
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaQueryExpression,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
)

from rpcwatch.networks import parse_network
from rpcwatch.sigma.compiled import CompiledRule, RuleError
from rpcwatch.sigma.expr import (
    BoolTest,
    CidrTest,
    ExistsTest,
    Expr,
    FieldRefTest,
    Keyword,
    Match,
    NullTest,
    NumberTest,
    Or,
    Pattern,
    RegexTest,
    StringTest,
    Test,
    TimePartTest,
    Wildcard,
    all_of,
    any_of,
    negate,
)

_COMPARE_OPS = {
    SigmaCompareExpression.CompareOperators.LT: "<",
    SigmaCompareExpression.CompareOperators.LTE: "<=",
    SigmaCompareExpression.CompareOperators.GT: ">",
    SigmaCompareExpression.CompareOperators.GTE: ">=",
}


def compile_rule(rule: SigmaRule, placeholders: Mapping[str, Sequence[str]] | None = None,
                 path: str = "", key: str = "") -> CompiledRule:
    """Translate one pySigma rule; raises :class:`RuleError` with the reason it cannot run."""
    if rule.errors:
        raise RuleError("; ".join(str(error) for error in rule.errors))
    try:
        conditions = [condition.parsed for condition in rule.detection.parsed_condition]
    except Exception as exc:  # pySigma raises its own error types for bad conditions
        raise RuleError(f"condition: {exc}") from None
    translator = _Translator(placeholders or {})
    expr = any_of(translator.translate(condition) for condition in conditions)
    custom = rule.custom_attributes.get("rpcwatch") or {}
    return CompiledRule(
        id=str(rule.id) if rule.id else "",
        title=rule.title,
        level=rule.level.name.lower() if rule.level else "",
        tags=tuple(f"{tag.namespace}.{tag.name}" for tag in rule.tags),
        logsource={"category": rule.logsource.category, "product": rule.logsource.product,
                   "service": rule.logsource.service},
        expr=expr,
        path=path,
        status=rule.status.name.lower() if rule.status else "",
        description=(rule.description or "").strip(),
        falsepositives=tuple(rule.falsepositives or ()),
        guide=str(custom.get("investigation", "")).strip() if isinstance(custom, dict) else "",
        name=getattr(rule, "name", None),
        key=key or str(rule.id or rule.title),
        emit=bool(getattr(rule, "_output", True)),
    )


def compile_selection(definition: Mapping) -> Expr:
    """A lone Sigma selection (detection syntax), as used by log-source ``where`` clauses."""
    detection = SigmaDetection.from_definition(definition)
    detections = SigmaDetections({"where": detection}, ["where"])
    return _Translator({}).translate(detection.postprocess(detections))


class _Translator:
    def __init__(self, placeholders: Mapping[str, Sequence[str]]):
        self.placeholders = placeholders

    def translate(self, node) -> Expr:
        if isinstance(node, ConditionAND):
            return all_of(self.translate(arg) for arg in node.args)
        if isinstance(node, ConditionOR):
            return _merge_cidr(any_of(self.translate(arg) for arg in node.args))
        if isinstance(node, ConditionNOT):
            return negate(self.translate(node.args[0]))
        if isinstance(node, ConditionFieldEqualsValueExpression):
            return self.field_value(node.field, node.value)
        if isinstance(node, ConditionValueExpression):
            return self.keyword(node.value)
        raise RuleError(f"unsupported condition element {type(node).__name__}")

    def field_value(self, field_name: str, value) -> Expr:
        if isinstance(value, SigmaExpansion):
            return _merge_cidr(any_of(self.field_value(field_name, v) for v in value.values))
        if isinstance(value, SigmaCompareExpression) and value.op == SigmaCompareExpression.CompareOperators.NEQ:
            return negate(Match(field_name, NumberTest("==", value.number.number)))
        if isinstance(value, SigmaString) and value.contains_placeholder():
            return any_of(Match(field_name, test) for test in self.expand(value))
        return Match(field_name, self.test(value))

    def keyword(self, value) -> Expr:
        if isinstance(value, SigmaExpansion):
            return any_of(self.keyword(v) for v in value.values)
        if isinstance(value, SigmaString) and value.contains_placeholder():
            return any_of(Keyword(test) for test in self.expand(value))
        return Keyword(self.test(value))

    def expand(self, value: SigmaString) -> list[Test]:
        """``|expand``: each placeholder becomes the configured values (OR)."""
        alternatives: list[Pattern] = [()]
        for part in value.s:
            if isinstance(part, Placeholder):
                values = self.placeholders.get(part.name)
                if not values:
                    raise RuleError(f"placeholder %{part.name}% has no value in the configuration "
                                    f"([placeholders] in rpcwatch.toml)")
                alternatives = [prefix + _pattern(SigmaString(v)) for prefix in alternatives for v in values]
            else:
                alternatives = [prefix + _pattern_parts([part]) for prefix in alternatives]
        case_sensitive = isinstance(value, SigmaCasedString)
        return [StringTest(pattern, case_sensitive) for pattern in alternatives]

    def test(self, value) -> Test:
        if isinstance(value, SigmaTimestampPart):
            return TimePartTest(value.timestamp_part.name.lower(), "==", int(value.number))
        if isinstance(value, SigmaBool):
            return BoolTest(bool(value.boolean))
        if isinstance(value, SigmaNumber):
            return NumberTest("==", value.number)
        if isinstance(value, SigmaString):
            return StringTest(_pattern(value), isinstance(value, SigmaCasedString))
        if isinstance(value, SigmaNull):
            return NullTest()
        if isinstance(value, SigmaExists):
            return ExistsTest(bool(value.exists))
        if isinstance(value, SigmaCIDRExpression):
            return CidrTest((parse_network(str(value.network)),))
        if isinstance(value, SigmaCompareExpression):
            return NumberTest(_COMPARE_OPS[value.op], value.number.number)
        if isinstance(value, SigmaRegularExpression):
            return _regex(value)
        if isinstance(value, SigmaFieldReference):
            return FieldRefTest(value.field, starts_with=bool(value.starts_with),
                                ends_with=bool(value.ends_with))
        if isinstance(value, SigmaQueryExpression):
            raise RuleError("query-expression placeholders are not supported")
        raise RuleError(f"unsupported value type {type(value).__name__}")


def _pattern(value: SigmaString) -> Pattern:
    return _pattern_parts(value.s)


def pattern_of(text: str) -> Pattern:
    """A Sigma string (wildcards, escapes) as a pattern."""
    return _pattern(SigmaString(text))


def _pattern_parts(parts) -> Pattern:
    out: list = []
    for part in parts:
        if part == SpecialChars.WILDCARD_MULTI:
            out.append(Wildcard.ANY)
        elif part == SpecialChars.WILDCARD_SINGLE:
            out.append(Wildcard.ONE)
        elif isinstance(part, str):
            if out and isinstance(out[-1], str):
                out[-1] += part
            else:
                out.append(part)
        else:
            raise RuleError(f"unsupported string element {part!r}")
    return tuple(out)


def _regex(value: SigmaRegularExpression) -> RegexTest:
    text = value.regexp.to_plain() if hasattr(value.regexp, "to_plain") else str(value.regexp)
    flags = value.flags or set()
    test = RegexTest(text,
                     ignore_case=SigmaRegularExpressionFlag.IGNORECASE in flags,
                     multiline=SigmaRegularExpressionFlag.MULTILINE in flags,
                     dotall=SigmaRegularExpressionFlag.DOTALL in flags)
    try:  # RE2 only: linear-time matching, so a hostile pattern cannot hang a run
        re2.compile(text)
    except re2.error as exc:
        raise RuleError(f"regular expression {text!r} is not valid RE2 syntax ({exc})") from None
    return test


def _merge_cidr(expr: Expr) -> Expr:
    """OR-ed CIDR tests on one field become one test over all the networks (one lookup)."""
    if not isinstance(expr, Or):
        return expr
    by_field: dict[str, list] = {}
    others = []
    for item in expr.items:
        if isinstance(item, Match) and isinstance(item.test, CidrTest):
            by_field.setdefault(item.field, []).extend(item.test.networks)
        else:
            others.append(item)
    if not by_field:
        return expr
    merged = [Match(name, CidrTest(tuple(dict.fromkeys(nets)))) for name, nets in by_field.items()]
    return any_of(merged + others)
