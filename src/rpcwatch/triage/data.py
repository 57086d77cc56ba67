"""The triage data files (``triage/data/*.yml``), read once."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import yaml


@lru_cache(maxsize=None)
def load(name: str) -> dict[str, Any]:
    text = (resources.files("rpcwatch.triage") / "data" / name).read_text(encoding="utf-8")
    return yaml.safe_load(text) or {}
