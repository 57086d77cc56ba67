"""``elasticsearch+http(s)://HOST:PORT/INDEX``: the bulk API, no duplicates.

Each alert is a ``create`` action with ``_id`` = its ``event.id``: a replay after a crash
is answered 409 (``version_conflict_engine_exception``) and counted as delivered, not
indexed twice. ``create`` is also the only action a data stream accepts, and every
document carries ``@timestamp`` (the detection time when the record had none).

The bulk response is read item by item: 201 is delivered, 409 was delivered before, 429
and 5xx items are sent again after a pause (a few times, then the batch is left for a
later retry), any other error refuses that document for good (a mapping conflict),
returned with Elasticsearch's reason. Whole requests answered 429 or 5xx are retried by
urllib3 with backoff; 401 and 403 are a configuration error. Credentials: an API key
(``api_key``, ``$RPCWATCH_ES_API_KEY``) or a user and password (``username`` /
``$RPCWATCH_ES_USERNAME``, ``password`` / ``$RPCWATCH_ES_PASSWORD``).
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from urllib3.util import make_headers

from rpcwatch.outputs.sinks.base import NO_DUPLICATES, Rejection, SinkError, SinkSettings, SinkUnavailable
from rpcwatch.outputs.sinks.http import HTTP_OPTIONS, RETRY_STATUSES, HttpSink, json_body

#: most bytes of one bulk request (Elastic advises requests of a few MB)
BULK_BYTES = 5 << 20


class ElasticsearchSink(HttpSink):
    schemes = ("elasticsearch+http", "elasticsearch+https")
    guarantee = NO_DUPLICATES
    options = HTTP_OPTIONS | {"api_key", "api_key_env", "username", "password", "password_env"}

    def __init__(self, settings: SinkSettings):
        super().__init__(settings)
        self.index = self.url.path.strip("/")
        if not self.index or "/" in self.index:
            raise SinkError(f"{self.name}: name one index or data stream in the URL "
                            "(elasticsearch+https://HOST:9200/rpcwatch-alerts)")
        self._headers = {"Content-Type": "application/x-ndjson", "Accept": "application/json"}
        api_key = self.secret("api_key", "RPCWATCH_ES_API_KEY")
        username = self.option("username") or self.url.username or self.secret("username", "RPCWATCH_ES_USERNAME")
        if api_key:
            self._headers["Authorization"] = f"ApiKey {api_key}"
        elif username:
            password = self.secret("password", "RPCWATCH_ES_PASSWORD") or ""
            self._headers.update(make_headers(basic_auth=f"{username}:{password}"))
        self._pending: list[dict] = []
        #: documents Elasticsearch already had (a replay), over the run
        self.duplicates = 0

    def write(self, documents: Sequence[dict]) -> None:
        self._pending.extend(documents)

    def flush(self) -> list[Rejection]:
        documents, self._pending = self._pending, []
        rejected: list[Rejection] = []
        for part in _parts(documents):
            rejected.extend(self._deliver(part))
        return rejected

    def _deliver(self, documents: list[tuple[dict, bytes]]) -> list[Rejection]:
        rejected = []
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(30.0, self.backoff * 2 ** (attempt - 1)))
            response = self.request("POST", "/_bulk", b"".join(self._action(doc) + line for doc, line in documents),
                                    self._headers)
            if response.status in (401, 403):
                raise SinkError(f"{self.name}: credentials refused (HTTP {response.status})")
            if response.status != 200:
                raise SinkUnavailable(f"{self.name}: HTTP {response.status} {_error(json_body(response))}")
            items = json_body(response).get("items", [])
            if len(items) != len(documents):
                raise SinkUnavailable(f"{self.name}: the bulk response has {len(items)} items for "
                                      f"{len(documents)} documents")
            again = []
            for (document, line), item in zip(documents, items):
                result: dict = next(iter(item.values()), {}) if isinstance(item, dict) else {}
                status = result.get("status", 0)
                if status == 409:
                    self.duplicates += 1
                elif status in RETRY_STATUSES:
                    again.append((document, line))
                elif not 200 <= status < 300:
                    rejected.append(Rejection(document, f"HTTP {status} {_error(result)}"))
            if not again:
                return rejected
            documents = again
        raise SinkUnavailable(f"{self.name}: {len(documents)} documents still refused for now "
                              f"(429 or 5xx) after {self.retries + 1} tries")

    def _action(self, document: dict) -> bytes:
        return json.dumps({"create": {"_index": self.index, "_id": document["event"]["id"]}}).encode() + b"\n"


def _parts(documents: list[dict]) -> list[list[tuple[dict, bytes]]]:
    """Documents as bulk lines, in requests of at most ``BULK_BYTES``."""
    parts: list[list[tuple[dict, bytes]]] = [[]]
    size = 0
    for document in documents:
        if document.get("@timestamp") is None:
            document = {**document, "@timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        line = json.dumps(document, ensure_ascii=True, separators=(",", ":"), default=str).encode() + b"\n"
        if parts[-1] and size + len(line) > BULK_BYTES:
            parts.append([])
            size = 0
        parts[-1].append((document, line))
        size += len(line)
    return [part for part in parts if part]


def _error(body: dict) -> str:
    error = body.get("error")
    if isinstance(error, dict):
        return f"{error.get('type', 'error')}: {error.get('reason', '')}".strip()
    return str(error or "")
