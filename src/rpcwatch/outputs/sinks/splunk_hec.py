"""``splunk-hec+http(s)://HOST:PORT``: Splunk's HTTP Event Collector, at least once.

Events go to ``/services/collector/event`` (or the URL's path) as JSON event objects one
after another, with ``Authorization: Splunk <token>`` and a request channel
(``X-Splunk-Request-Channel``, a GUID per run unless ``channel`` is set). When the token
has indexer acknowledgement enabled, the answer carries an ``ackId``; ``flush`` then polls
``/services/collector/ack`` until the indexers confirm the batch (or ``ack_timeout``
passes: the batch is sent again later, hence at least once).

HEC's status codes (Splunk's "Troubleshoot HTTP Event Collector" table): 0 success;
1-4 the token (disabled, missing, refused) and 10, 11, 14, 16 the request's setup are
configuration errors; 8, 9 and 18-20 (busy, unhealthy) and HTTP 5xx are retried later;
5-7, 12, 13 and 15 refuse data: in a batch, ``invalid-event-number`` names the first
refused event, the events before it were accepted, that event is refused for good and the
rest are sent again. The token comes from ``token`` / ``token_env`` in rpcwatch.toml or
``$RPCWATCH_HEC_TOKEN``.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence

from rpcwatch.alerts import epoch_micros
from rpcwatch.outputs.sinks.base import AT_LEAST_ONCE, Rejection, SinkError, SinkSettings, SinkUnavailable
from rpcwatch.outputs.sinks.http import HTTP_OPTIONS, HttpSink, json_body

EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
CONFIGURATION_CODES = {1, 2, 3, 4, 10, 11, 14, 16}
DATA_CODES = {5, 6, 7, 12, 13, 15}


class SplunkHecSink(HttpSink):
    schemes = ("splunk-hec+http", "splunk-hec+https")
    guarantee = AT_LEAST_ONCE
    options = HTTP_OPTIONS | {"token", "token_env", "index", "source", "sourcetype", "host", "channel",
                              "ack_timeout"}

    def __init__(self, settings: SinkSettings):
        super().__init__(settings)
        token = self.secret("token", "RPCWATCH_HEC_TOKEN")
        if token is None:
            raise SinkError(f"{self.name}: no HEC token: set RPCWATCH_HEC_TOKEN, or token_env or token in "
                            "the sink's [[sinks]] table of rpcwatch.toml")
        self.path = self.url.path if len(self.url.path) > 1 else EVENT_PATH
        self.channel = str(self.option("channel") or uuid.uuid4())
        self.ack_timeout = float(self.option("ack_timeout", 60.0))
        self._headers = {"Authorization": f"Splunk {token}", "X-Splunk-Request-Channel": self.channel,
                         "Content-Type": "application/json"}
        self._metadata = {key: str(self.option(key)) for key in ("index", "source", "sourcetype", "host")
                          if self.option(key) is not None}
        self._metadata.setdefault("source", "rpcwatch")
        self._metadata.setdefault("sourcetype", "rpcwatch:alert")
        self._pending: list[dict] = []

    def write(self, documents: Sequence[dict]) -> None:
        self._pending.extend(documents)

    def flush(self) -> list[Rejection]:
        documents, self._pending = self._pending, []
        rejected: list[Rejection] = []
        while documents:
            body = b"".join(self._event(document) for document in documents)
            response = self.request("POST", self.path, body, self._headers)
            answer = json_body(response)
            code = answer.get("code")
            if response.status == 200 and code in (0, None):
                if "ackId" in answer:
                    self._await_ack(answer["ackId"])
                return rejected
            problem = f"HTTP {response.status}, HEC code {code}: {answer.get('text', '')}".strip()
            if code in CONFIGURATION_CODES or response.status in (401, 403):
                raise SinkError(f"{self.name}: {problem}")
            if code not in DATA_CODES:
                raise SinkUnavailable(f"{self.name}: {problem}")
            first_bad = answer.get("invalid-event-number", 0)
            if not isinstance(first_bad, int) or not 0 <= first_bad < len(documents):
                first_bad = 0
            rejected.append(Rejection(documents[first_bad], problem))
            documents = documents[first_bad + 1:]
        return rejected

    def _event(self, document: dict) -> bytes:
        event: dict[str, object] = {**self._metadata, "event": document}
        seconds = _epoch(document.get("@timestamp"))
        if seconds is not None:
            event["time"] = seconds
        return json.dumps(event, ensure_ascii=True, separators=(",", ":"), default=str).encode() + b"\n"

    def _await_ack(self, ack_id: int) -> None:
        deadline = time.monotonic() + self.ack_timeout
        pause = 0.05
        body = json.dumps({"acks": [ack_id]}).encode()
        while True:
            answer = json_body(self.request("POST", ACK_PATH, body, self._headers))
            if answer.get("acks", {}).get(str(ack_id)) is True:
                return
            if time.monotonic() + pause > deadline:
                raise SinkUnavailable(f"{self.name}: the indexers did not acknowledge the batch (ackId {ack_id}) "
                                      f"within {self.ack_timeout:g} s")
            time.sleep(pause)
            pause = min(1.0, pause * 2)


def _epoch(timestamp) -> float | None:
    micros = epoch_micros(timestamp) if isinstance(timestamp, str) else None
    return None if micros is None else micros / 1e6
