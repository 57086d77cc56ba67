"""Shared test fixtures: where the public corpus is, and how its absence is handled.

The corpus lives outside the project (``../shared/corpus`` from the repository root, or
``$RPCWATCH_CORPUS``). Tests that need it skip with a reason when it is absent, except
under CI (``CI=true``), where its absence is a failure.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("RPCWATCH_CORPUS", REPO.parent / "shared" / "corpus"))
SHARED_TOOLS = CORPUS.parent / "tools"


def _require(path: Path, what: str) -> Path:
    if path.exists():
        return path
    message = f"{what} not found at {path} (set RPCWATCH_CORPUS to the shared corpus)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def corpus() -> Path:
    """Root of the shared corpus (``../shared/corpus``)."""
    return _require(CORPUS, "shared corpus")


@pytest.fixture(scope="session")
def shared_tools() -> Path:
    """``../shared/tools`` (the synthetic Zeek log generator)."""
    return _require(SHARED_TOOLS, "shared tools")


@pytest.fixture(autouse=True)
def _fresh_run_context():
    """Each test runs in a run context of its own: prefilters that have not yet learnt to
    stop, a worker pool of its own (closed afterwards)."""
    from rpcwatch.context import RunContext

    with RunContext():
        yield


from spark_support import spark_session  # noqa: E402,F401  (the shared local[2] session)
