"""Sinks: where live mode delivers alerts, chosen by URL scheme (``--to URL`` or a
``[[sinks]]`` table of rpcwatch.toml). The contract is in :mod:`.base`; each module is one
sink and states its delivery guarantee."""
from __future__ import annotations

from collections.abc import Iterable

from rpcwatch.outputs.sinks.base import Sink, SinkError, SinkSettings, SinkUnavailable
from rpcwatch.outputs.sinks.elasticsearch import ElasticsearchSink
from rpcwatch.outputs.sinks.file import FileSink
from rpcwatch.outputs.sinks.splunk_hec import SplunkHecSink
from rpcwatch.outputs.sinks.stream import StreamSink
from rpcwatch.outputs.sinks.syslog import SyslogSink
from rpcwatch.outputs.sinks.webhook import WebhookSink

__all__ = ["SINKS", "Sink", "SinkError", "SinkSettings", "SinkUnavailable", "make_sink", "make_sinks"]

SINKS: dict[str, type[Sink]] = {scheme: sink for sink in (StreamSink, FileSink, SyslogSink, ElasticsearchSink,
                                                          SplunkHecSink, WebhookSink) for scheme in sink.schemes}
STDOUT = "stdout:"


def make_sink(settings: SinkSettings) -> Sink:
    scheme = settings.url.split(":", 1)[0].lower() if ":" in settings.url else ""
    sink = SINKS.get(scheme)
    if sink is None:
        raise SinkError(f"{settings.origin}: unknown sink {scheme or settings.url!r} "
                        f"(known: {', '.join(sorted(SINKS))})")
    return sink(settings)


def make_sinks(given: Iterable[SinkSettings]) -> list[Sink]:
    """The sinks, each once (two settings naming the same sink would share its spool)."""
    sinks: list[Sink] = []
    for settings in given:
        sink = make_sink(settings)
        if any(other.key == sink.key for other in sinks):
            raise SinkError(f"{sink.name} is given twice")
        sinks.append(sink)
    return sinks or [make_sink(SinkSettings(STDOUT, origin="default"))]
