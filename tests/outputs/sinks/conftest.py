"""Alerts to deliver, made the way live mode makes them: a hunt over a Zeek log whose
values include what each wire format must escape."""
from __future__ import annotations

import json

import pytest
from documents import documents

from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import Hunt, plan_hunt
from rpcwatch.sources import expand_inputs

#: a value that every format must carry unchanged: quotes, backslashes, brackets, pipes,
#: equals signs, line breaks, Slack markup
HOSTILE = 'x"] \\ [y=1|z\r\n<!channel> & <http://evil|click>'


@pytest.fixture(scope="session")
def alerts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sink-alerts")
    rows = [{"ts": 1717236000.25 + i, "uid": f"CS{i}" if i else HOSTILE, "id.orig_h": f"45.83.64.{i + 1}",
             "id.orig_p": 40000 + i, "id.resp_h": "10.20.0.10", "id.resp_p": 135, "proto": "tcp",
             "conn_state": "REJ"} for i in range(5)]
    (folder / "conn.log").write_text("".join(json.dumps(row) + "\n" for row in rows))
    found = documents(Hunt(list(expand_inputs([str(folder)])), plan_hunt(), DuckDBEngine()))
    assert len(found) == 5
    # as a sink receives them: JSON-ready dicts
    return [json.loads(json.dumps(alert)) for alert in found]
