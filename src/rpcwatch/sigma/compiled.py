"""What a compiled rule is, for everything that runs rules: a module that does not import
pySigma, so a run whose rules come from the compiled-rule cache never loads it (pySigma
takes a good share of a short run's start-up; it parses and compiles on a cache miss)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rpcwatch.sigma.expr import Expr


class RuleError(Exception):
    """Why a rule cannot run (the other rules still do)."""


@dataclass(frozen=True)
class CompiledRule:
    """A runnable rule: its metadata and its detection as an expression tree."""

    id: str
    title: str
    level: str
    tags: tuple[str, ...]
    logsource: Mapping[str, str | None]
    expr: Expr
    path: str = ""
    status: str = ""
    description: str = ""
    falsepositives: tuple[str, ...] = ()
    guide: str = ""
    name: str | None = None
    #: unique within a rule set (correlations refer to rules by it)
    key: str = ""
    #: False for a rule referenced only by correlations that do not ``generate`` it
    emit: bool = True
