"""What the HTTP sinks share: one urllib3 pool with TLS verification on (a CA file may be
given), timeouts, and urllib3's retry policy for whole requests (connection errors, 429
and 5xx, with exponential backoff that honours ``Retry-After``)."""
from __future__ import annotations

import json
from collections.abc import Mapping

import urllib3
from urllib3.exceptions import HTTPError
from urllib3.util import Retry, Timeout

from rpcwatch.outputs.sinks.base import Sink, SinkError, SinkSettings, SinkUnavailable

#: statuses worth the same request again later
RETRY_STATUSES = (429, 500, 502, 503, 504)
HTTP_OPTIONS = frozenset({"ca_file", "timeout", "retries", "backoff"})


class HttpSink(Sink):
    def __init__(self, settings: SinkSettings):
        super().__init__(settings)
        secure = self.url.scheme.endswith("https")
        if not self.url.hostname:
            raise SinkError(f"{self.name}: the URL has no host")
        if self.url.password:
            raise SinkError(f"{self.name}: a password in the URL is not accepted (it would show in process "
                            "lists); give it in rpcwatch.toml or the environment")
        host = f"[{self.url.hostname}]" if ":" in self.url.hostname else self.url.hostname
        self.base = f"{'https' if secure else 'http'}://{host}:{self.url.port or (443 if secure else 80)}"
        self.retries = int(self.option("retries", 3))
        self.backoff = float(self.option("backoff", 0.5))
        timeout = float(self.option("timeout", 10.0))
        pool_options: dict = {"timeout": Timeout(connect=timeout, read=timeout)}
        if secure:
            pool_options["cert_reqs"] = "CERT_REQUIRED"
            if self.option("ca_file"):
                pool_options["ca_certs"] = str(self.option("ca_file"))
        self._pool = urllib3.PoolManager(**pool_options)

    def request(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str],
                retry: bool = True) -> urllib3.BaseHTTPResponse:
        """The response after urllib3's retries; SinkUnavailable when no answer came."""
        policy = Retry(total=self.retries if retry else 0, backoff_factor=self.backoff, backoff_max=30,
                       status_forcelist=RETRY_STATUSES, allowed_methods=None, raise_on_status=False,
                       respect_retry_after_header=True)
        try:
            return self._pool.request(method, self.base + path, body=body, headers=dict(headers),
                                      retries=policy, redirect=False)
        except HTTPError as exc:
            raise SinkUnavailable(f"{self.name}: {self._describe(exc)}") from None

    def _describe(self, exc: Exception) -> str:
        """The cause of a failed request, without the URL (whose path may be a secret)."""
        reason = getattr(exc, "reason", None) or exc
        text = str(reason).split(">: ", 1)[-1]
        return text.replace(self.url.path, "/...") if len(self.url.path) > 1 else text

    def close(self) -> None:
        self._pool.clear()


def json_body(response: urllib3.BaseHTTPResponse) -> dict:
    try:
        value = json.loads(response.data or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
