"""Local stand-ins for Elasticsearch's bulk API and Splunk's HTTP Event Collector, written
from the products' documentation (docs/siem.md names the parts), served by
pytest-httpserver. They keep what they accepted, so tests compare it with what was sent."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from werkzeug import Request, Response


def _json(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json", headers=headers)


@dataclass
class ElasticsearchStandIn:
    """``POST /_bulk``: NDJSON action/document pairs; answers per item as Elasticsearch does.

    * ``create`` with an ``_id`` that exists: 409 ``version_conflict_engine_exception``;
    * a data stream (``data_stream``) accepts only ``create`` and needs ``@timestamp``;
    * ``mapping_errors``: documents (by ``_id`` or by the record's ``uid``) refused with 400
      ``mapper_parsing_exception``, as a field of a type the index mapping does not take;
    * ``busy_items``: ids answered 429 ``es_rejected_execution_exception`` that many times;
    * ``whole``: statuses to answer whole requests with before serving (429, 503, ...).
    """

    data_stream: bool = False
    api_key: str | None = None
    documents: dict = field(default_factory=dict)
    creates: Counter = field(default_factory=Counter)
    conflicts: int = 0
    mapping_errors: set = field(default_factory=set)
    busy_items: Counter = field(default_factory=Counter)
    whole: list = field(default_factory=list)
    requests: list = field(default_factory=list)

    def install(self, server) -> None:
        server.expect_request("/_bulk", method="POST").respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        self.requests.append(request)
        if self.api_key and request.headers.get("Authorization") != f"ApiKey {self.api_key}":
            return _json({"error": {"type": "security_exception", "reason": "unable to authenticate"},
                          "status": 401}, 401)
        if self.whole:
            status = self.whole.pop(0)
            return _json({"error": {"type": "es_rejected_execution_exception", "reason": "busy"},
                          "status": status}, status, {"Retry-After": "0"} if status == 429 else None)
        if request.headers.get("Content-Type") != "application/x-ndjson":
            return _json({"error": {"type": "illegal_argument_exception", "reason": "content type"}}, 400)
        lines = request.get_data().decode().splitlines()
        items = [self._item(json.loads(action), json.loads(source))
                 for action, source in zip(lines[0::2], lines[1::2])]
        return _json({"took": 1, "errors": any(next(iter(i.values()))["status"] >= 300 for i in items),
                      "items": items})

    def _item(self, action: dict, document: dict) -> dict:
        (op, meta), = action.items()
        index, doc_id = meta.get("_index"), meta.get("_id")
        result = {"_index": index, "_id": doc_id}
        if self.data_stream and op != "create":
            return {op: {**result, "status": 400, "error": {
                "type": "illegal_argument_exception",
                "reason": "only write ops with an op_type of create are allowed in data streams"}}}
        if self.data_stream and "@timestamp" not in document:
            return {op: {**result, "status": 400, "error": {
                "type": "illegal_argument_exception", "reason": "data stream timestamp field [@timestamp] is missing"}}}
        if self.busy_items.get(doc_id, 0) > 0:
            self.busy_items[doc_id] -= 1
            return {op: {**result, "status": 429, "error": {"type": "es_rejected_execution_exception",
                                                            "reason": "rejected execution"}}}
        if doc_id in self.mapping_errors or document.get("original", {}).get("uid") in self.mapping_errors:
            return {op: {**result, "status": 400, "error": {"type": "mapper_parsing_exception",
                                                            "reason": "failed to parse field [source.port]"}}}
        if doc_id in self.documents:
            self.conflicts += 1
            return {op: {**result, "status": 409, "error": {
                "type": "version_conflict_engine_exception",
                "reason": f"[{doc_id}]: version conflict, document already exists (current version [1])"}}}
        self.documents[doc_id] = document
        self.creates[doc_id] += 1
        return {op: {**result, "_version": 1, "result": "created", "status": 201}}


@dataclass
class HecStandIn:
    """``POST /services/collector/event`` and ``/services/collector/ack`` with HEC's codes.

    * a missing token: 401 code 2; a wrong one: 403 code 4;
    * with ``ack`` on, a request without ``X-Splunk-Request-Channel``: 400 code 10, and each
      accepted request gets an ``ackId`` that the ack endpoint reports true after
      ``ack_after`` polls (never, with ``ack_after=None``);
    * events are JSON objects one after another; one without ``event`` (400 code 12) or one
      whose alert id is in ``invalid`` (400 code 6, invalid data format) stops the request
      with ``invalid-event-number``: the events before it are indexed;
    * ``busy``: that many requests are answered 503 code 9 (server is busy).
    """

    token: str
    ack: bool = False
    ack_after: int | None = 1
    busy: int = 0
    invalid: set = field(default_factory=set)
    events: list = field(default_factory=list)
    channels: set = field(default_factory=set)
    polls: Counter = field(default_factory=Counter)
    _next_ack: int = 0

    def install(self, server) -> None:
        server.expect_request("/services/collector/event", method="POST").respond_with_handler(self.handle)
        server.expect_request("/services/collector/ack", method="POST").respond_with_handler(self.handle_ack)

    def _refused(self, request: Request) -> Response | None:
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return _json({"text": "Token is required", "code": 2}, 401)
        if authorization != f"Splunk {self.token}":
            return _json({"text": "Invalid token", "code": 4}, 403)
        channel = request.headers.get("X-Splunk-Request-Channel")
        if self.ack and not channel:
            return _json({"text": "Data channel is missing", "code": 10}, 400)
        return None

    def handle(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        if self.busy:
            self.busy -= 1
            return _json({"text": "Server is busy", "code": 9}, 503)
        self.channels.add(request.headers.get("X-Splunk-Request-Channel"))
        decoder, text, position, number = json.JSONDecoder(), request.get_data().decode(), 0, 0
        while position < len(text.strip()):
            event, end = decoder.raw_decode(text, position)
            if "event" not in event:
                return _json({"text": "Event field is required", "code": 12, "invalid-event-number": number}, 400)
            if event["event"].get("event", {}).get("id") in self.invalid:
                return _json({"text": "Invalid data format", "code": 6, "invalid-event-number": number}, 400)
            self.events.append(event)
            position, number = end, number + 1
            while position < len(text) and text[position].isspace():
                position += 1
        if not self.ack:
            return _json({"text": "Success", "code": 0})
        ack_id = self._next_ack
        self._next_ack += 1
        return _json({"text": "Success", "code": 0, "ackId": ack_id})

    def handle_ack(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        answer = {}
        for ack_id in json.loads(request.get_data())["acks"]:
            self.polls[ack_id] += 1
            answer[str(ack_id)] = self.ack_after is not None and self.polls[ack_id] > self.ack_after
        return _json({"acks": answer})
