"""The YAML data files shipped in the package (mappings, pipelines, triage data), read once."""
from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml

#: libyaml's safe loader where PyYAML was built with it: the pure-Python one takes a
#: noticeable share of a short run's start-up on the mapping files alone
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=FAST_LOADER)


@cache
def load_yaml(package: str, *path: str) -> Any:
    """A YAML file of ``package`` (its data, or ``{}`` when the file is empty)."""
    text = resources.files(package).joinpath(*path).read_text(encoding="utf-8")
    return parse_yaml(text) or {}
