"""``webhook+https://...``: a JSON POST per alert (or per batch with ``batch = true``), at
least once.

The body has a ``text`` field, what Slack's and Microsoft Teams' incoming webhooks show,
and the alert itself (``alert``, or ``alerts`` for a batch). Log content in ``text`` is
escaped as Slack's message formatting requires (``&``, ``<``, ``>``), so a log value can
neither mention ``@channel`` nor make a link. A webhook's URL is often its secret: only
the scheme and host are ever shown; give the URL in rpcwatch.toml rather than on the
command line. 429 and 5xx are retried with backoff; another 4xx refuses the alert for good.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import SplitResult

from rpcwatch.outputs.sinks.base import AT_LEAST_ONCE, Rejection, SinkError, SinkSettings, SinkUnavailable, display_url
from rpcwatch.outputs.sinks.http import HTTP_OPTIONS, RETRY_STATUSES, HttpSink

#: Slack's escapes for message text (&, <, >), also read correctly by Teams
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


class WebhookSink(HttpSink):
    schemes = ("webhook+http", "webhook+https")
    guarantee = AT_LEAST_ONCE
    options = HTTP_OPTIONS | {"batch"}

    def __init__(self, settings: SinkSettings):
        super().__init__(settings)
        self.path = (self.url.path or "/") + (f"?{self.url.query}" if self.url.query else "")
        self.batch = bool(self.option("batch", False))
        self._pending: list[dict] = []

    @classmethod
    def shown(cls, url: SplitResult) -> str:
        """The path of a webhook's URL is its secret (Slack, Teams): scheme and host only."""
        return display_url(url._replace(path="/...", query=""))

    def write(self, documents: Sequence[dict]) -> None:
        self._pending.extend(documents)

    def flush(self) -> list[Rejection]:
        documents, self._pending = self._pending, []
        if not documents:
            return []
        if self.batch:
            text = f"{len(documents)} rpcwatch alert(s):\n" + "\n".join(alert_text(d) for d in documents)
            return self._post({"text": text, "alerts": documents}, documents)
        rejected = []
        for document in documents:
            rejected.extend(self._post({"text": alert_text(document), "alert": document}, [document]))
        return rejected

    def _post(self, body: dict, documents: list[dict]) -> list[Rejection]:
        data = json.dumps(body, ensure_ascii=True, separators=(",", ":"), default=str).encode()
        response = self.request("POST", self.path, data, {"Content-Type": "application/json"})
        if 200 <= response.status < 300:
            return []
        if response.status in RETRY_STATUSES:
            raise SinkUnavailable(f"{self.name}: HTTP {response.status}")
        if response.status in (401, 403, 404, 410):
            raise SinkError(f"{self.name}: HTTP {response.status} (is the webhook URL still valid?)")
        return [Rejection(document, f"HTTP {response.status}") for document in documents]


def alert_text(alert: dict) -> str:
    """One line: level, rule and reason (or the endpoints when there is no reason)."""
    rule = alert.get("rule", {})
    detail = alert.get("reason")
    if not detail:
        source, destination = alert.get("source", {}), alert.get("destination", {})
        detail = f"{source.get('ip', '?')} -> {destination.get('ip', '?')}:{destination.get('port', '?')}"
    line = f"[{rule.get('level', '')}] {rule.get('name', '')}: {detail}"
    return line.translate(_TEXT_ESCAPES)
