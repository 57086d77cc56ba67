"""The triage data files (``triage/data/*.yml``), read once."""
from __future__ import annotations

from typing import Any

from rpcwatch.datafiles import load_yaml


def load(name: str) -> dict[str, Any]:
    return load_yaml("rpcwatch.triage", "data", name)
