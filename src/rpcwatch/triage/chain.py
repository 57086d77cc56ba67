"""The advisory's attack chain as data (``triage/data/chain.yml``)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from rpcwatch.triage.data import load


@dataclass(frozen=True)
class Stage:
    number: int
    name: str
    brief: str


@dataclass(frozen=True)
class Chain:
    stages: tuple[Stage, ...]
    rpc_port: int
    dynamic_ports: tuple[tuple[int, int], ...]
    execution_operations: Mapping[str, frozenset[str]]
    lateral_ports: frozenset[int]
    execution_parent_images: tuple[str, ...]
    execution_parent_command_lines: tuple[str, ...]
    execution_window: float

    def stage(self, number: int) -> Stage:
        return self.stages[number - 1]

    def is_dynamic_port(self, port: int | None) -> bool:
        return port is not None and any(lo <= port <= hi for lo, hi in self.dynamic_ports)

    def is_execution(self, interface: str | None, operation: str | None) -> bool:
        return operation in self.execution_operations.get(interface or "", frozenset())

    def is_execution_parent(self, image: str | None, command_line: str | None) -> bool:
        image, command_line = (image or "").lower(), (command_line or "").lower()
        return any(image.endswith(suffix.lower()) for suffix in self.execution_parent_images) or \
            any(word.lower() in command_line for word in self.execution_parent_command_lines)


@lru_cache(maxsize=1)
def attack_chain() -> Chain:
    data = load("chain.yml")
    parents = data["execution_parents"]
    return Chain(
        stages=tuple(Stage(int(n), s["name"], s["brief"]) for n, s in sorted(data["stages"].items())),
        rpc_port=int(data["rpc_port"]),
        dynamic_ports=tuple((int(lo), int(hi)) for lo, hi in data["dynamic_ports"]),
        execution_operations={k: frozenset(v) for k, v in data["execution_operations"].items()},
        lateral_ports=frozenset(int(p) for p in data["lateral_ports"]),
        execution_parent_images=tuple(parents["images"]),
        execution_parent_command_lines=tuple(parents["command_lines"]),
        execution_window=float(data["execution_window"]),
    )
