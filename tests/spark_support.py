"""The Spark session the tests share: ``local[2]``, skipped with a reason when pyspark or
Java is missing, a failure under CI (``CI=true``), where .ci/run installs both."""
from __future__ import annotations

import os
import shutil

import pytest


def _missing(message: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def spark_session():
    try:
        import pyspark  # noqa: F401
    except ImportError:
        _missing("pyspark is not installed (pip install 'rpcwatch[spark]')")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        _missing("Java is not installed (.ci/install-java installs it)")
    from rpcwatch.engines.spark import spark_session as start

    session = start("local[2]", app_name="rpcwatch-tests")
    yield session
    session.stop()
