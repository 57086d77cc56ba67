"""Elasticsearch, Splunk HEC and webhook sinks against local servers that implement the
documented protocols (standins.py): what goes on the wire, and what each answer means."""
from __future__ import annotations

import json
import ssl

import pytest
import trustme
from outputs.sinks.conftest import HOSTILE
from outputs.sinks.standins import ElasticsearchStandIn, HecStandIn
from pytest_httpserver import HTTPServer
from werkzeug import Response

from rpcwatch.outputs.sinks import SinkError, SinkSettings, SinkUnavailable, make_sink

FAST = {"retries": 2, "backoff": 0.01, "timeout": 5}


def sink(url, **options):
    made = make_sink(SinkSettings(url, {**FAST, **options}))
    made.open()
    return made


def deliver(target, documents):
    target.write(documents)
    return target.flush()


def es_url(server, index="rpcwatch-alerts"):
    return f"elasticsearch+http://127.0.0.1:{server.port}/{index}"


# -- Elasticsearch ------------------------------------------------------------------------

def test_bulk_create_with_event_id_and_replay_is_a_conflict(httpserver, alerts):
    es = ElasticsearchStandIn()
    es.install(httpserver)
    target = sink(es_url(httpserver))
    assert deliver(target, alerts) == []
    assert set(es.documents) == {a["event"]["id"] for a in alerts}
    assert es.documents[alerts[0]["event"]["id"]] == alerts[0]
    request = es.requests[0]
    assert request.path == "/_bulk" and request.headers["Content-Type"] == "application/x-ndjson"
    actions = [json.loads(line) for line in request.get_data().decode().splitlines()[0::2]]
    assert actions[0] == {"create": {"_index": "rpcwatch-alerts", "_id": alerts[0]["event"]["id"]}}
    # the batch again (a replay after a crash): 409 per item, counted, nothing indexed twice
    assert deliver(target, alerts) == []
    assert es.conflicts == 5 and target.duplicates == 5
    assert set(es.creates.values()) == {1}


def test_partial_bulk_failure_retries_busy_items_and_refuses_mapping_errors(httpserver, alerts):
    ids = [a["event"]["id"] for a in alerts]
    es = ElasticsearchStandIn(mapping_errors={ids[1]}, busy_items={ids[2]: 2, ids[3]: 1})
    es.install(httpserver)
    rejected = deliver(sink(es_url(httpserver)), alerts)
    assert [r.document["event"]["id"] for r in rejected] == [ids[1]]
    assert rejected[0].reason.startswith("HTTP 400 mapper_parsing_exception")
    assert set(es.documents) == set(ids) - {ids[1]}
    assert len(es.requests) == 3  # all, then the two busy ones, then the one still busy


def test_busy_items_that_stay_busy_leave_the_batch_for_later(httpserver, alerts):
    ids = [a["event"]["id"] for a in alerts]
    es = ElasticsearchStandIn(busy_items={ids[0]: 10})
    es.install(httpserver)
    target = sink(es_url(httpserver))
    with pytest.raises(SinkUnavailable, match="1 documents still refused for now"):
        deliver(target, alerts)
    es.busy_items.clear()
    assert deliver(target, alerts) == []  # the retry: four 409s and one create
    assert set(es.documents) == set(ids) and es.conflicts == 4


def test_whole_request_429_and_5xx_are_retried_with_backoff(httpserver, alerts):
    es = ElasticsearchStandIn(whole=[429, 503])
    es.install(httpserver)
    assert deliver(sink(es_url(httpserver)), alerts) == []
    assert len(es.documents) == 5 and len(es.requests) == 3


def test_persistent_5xx_is_unavailable_with_the_reason(httpserver, alerts):
    es = ElasticsearchStandIn(whole=[503] * 10)
    es.install(httpserver)
    with pytest.raises(SinkUnavailable, match=r"HTTP 503 es_rejected_execution_exception"):
        deliver(sink(es_url(httpserver)), alerts)


def test_unreachable_is_unavailable(alerts):
    with pytest.raises(SinkUnavailable, match="elasticsearch\\+http://127.0.0.1:9/idx: .*refused"):
        deliver(sink("elasticsearch+http://127.0.0.1:9/idx", retries=0), alerts)


def test_data_stream_gets_create_and_a_timestamp(httpserver, alerts):
    es = ElasticsearchStandIn(data_stream=True)
    es.install(httpserver)
    without_time = {k: v for k, v in alerts[0].items() if k != "@timestamp"}
    assert deliver(sink(es_url(httpserver, "logs-rpcwatch-default")), [without_time, *alerts[1:]]) == []
    assert len(es.documents) == 5
    assert es.documents[alerts[0]["event"]["id"]]["@timestamp"].endswith("Z")


def test_api_key_from_the_environment_never_shown(httpserver, alerts, monkeypatch):
    es = ElasticsearchStandIn(api_key="c2VjcmV0OmtleQ==")
    es.install(httpserver)
    monkeypatch.setenv("RPCWATCH_ES_API_KEY", "wrong-key-123")
    with pytest.raises(SinkError) as refused:
        deliver(sink(es_url(httpserver)), alerts)
    assert "credentials refused (HTTP 401)" in str(refused.value) and "wrong-key-123" not in str(refused.value)
    monkeypatch.setenv("RPCWATCH_ES_API_KEY", "c2VjcmV0OmtleQ==")
    assert deliver(sink(es_url(httpserver)), alerts) == [] and len(es.documents) == 5


def test_password_in_the_url_is_refused():
    with pytest.raises(SinkError) as refused:
        make_sink(SinkSettings("elasticsearch+https://elastic:hunter2@es.example:9200/idx"))
    assert "hunter2" not in str(refused.value) and "password in the URL" in str(refused.value)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def tls_server(ca):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.start()
    yield server
    server.clear()
    server.stop()


def test_tls_is_verified_and_a_ca_file_can_be_given(tls_server, ca, alerts, tmp_path):
    es = ElasticsearchStandIn()
    es.install(tls_server)
    url = f"elasticsearch+https://127.0.0.1:{tls_server.port}/idx"
    with pytest.raises(SinkUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        deliver(sink(url, retries=0), alerts)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    assert deliver(sink(url, ca_file=str(ca_file)), alerts) == [] and len(es.documents) == 5


# -- Splunk HEC ---------------------------------------------------------------------------

def hec_url(server):
    return f"splunk-hec+http://127.0.0.1:{server.port}"


def test_hec_batch_with_token_channel_and_metadata(httpserver, alerts):
    hec = HecStandIn(token="0f1e2d3c-aaaa-bbbb-cccc-111122223333")
    hec.install(httpserver)
    target = sink(hec_url(httpserver), token=hec.token, index="security")
    assert deliver(target, alerts) == [] and deliver(target, alerts[:1]) == []
    assert [e["event"] for e in hec.events] == alerts + alerts[:1]
    assert hec.events[0]["sourcetype"] == "rpcwatch:alert" and hec.events[0]["index"] == "security"
    assert hec.events[0]["time"] == pytest.approx(1717236000.25)
    assert len(hec.channels) == 1 and None not in hec.channels  # one channel for the run


def test_hec_indexer_acknowledgement_is_awaited(httpserver, alerts):
    hec = HecStandIn(token="t0k3n", ack=True, ack_after=3)
    hec.install(httpserver)
    assert deliver(sink(hec_url(httpserver), token="t0k3n"), alerts) == []
    assert hec.polls == {0: 4}


def test_hec_unacknowledged_batch_is_unavailable(httpserver, alerts):
    hec = HecStandIn(token="t0k3n", ack=True, ack_after=None)
    hec.install(httpserver)
    with pytest.raises(SinkUnavailable, match=r"did not acknowledge the batch \(ackId 0\) within 0.3 s"):
        deliver(sink(hec_url(httpserver), token="t0k3n", ack_timeout=0.3), alerts)


def test_hec_invalid_event_number_splits_the_batch(httpserver, alerts):
    hec = HecStandIn(token="t0k3n", invalid={alerts[2]["event"]["id"]})
    hec.install(httpserver)
    rejected = deliver(sink(hec_url(httpserver), token="t0k3n"), alerts)
    assert [r.document for r in rejected] == [alerts[2]]
    assert rejected[0].reason == "HTTP 400, HEC code 6: Invalid data format"
    assert [e["event"] for e in hec.events] == [alerts[0], alerts[1], alerts[3], alerts[4]]


def test_hec_busy_is_retried_and_a_bad_token_is_a_configuration_error(httpserver, alerts, monkeypatch):
    hec = HecStandIn(token="t0k3n", busy=2)
    hec.install(httpserver)
    assert deliver(sink(hec_url(httpserver), token="t0k3n"), alerts) == [] and len(hec.events) == 5
    monkeypatch.setenv("RPCWATCH_HEC_TOKEN", "not-the-token")
    with pytest.raises(SinkError) as refused:
        deliver(sink(hec_url(httpserver)), alerts)
    assert "HEC code 4: Invalid token" in str(refused.value) and "not-the-token" not in str(refused.value)


def test_hec_without_a_token_says_where_to_put_it(monkeypatch):
    monkeypatch.delenv("RPCWATCH_HEC_TOKEN", raising=False)
    with pytest.raises(SinkError, match="set RPCWATCH_HEC_TOKEN"):
        make_sink(SinkSettings("splunk-hec+https://splunk.example:8088"))


def test_hec_token_from_a_named_variable(httpserver, alerts, monkeypatch):
    hec = HecStandIn(token="from-env")
    hec.install(httpserver)
    monkeypatch.setenv("MY_HEC", "from-env")
    assert deliver(sink(hec_url(httpserver), token_env="MY_HEC"), alerts) == [] and len(hec.events) == 5


# -- webhook ------------------------------------------------------------------------------

def test_webhook_posts_slack_compatible_text_per_alert(httpserver, alerts):
    posted = []
    httpserver.expect_request("/hooks/T000/B000/XXXX", method="POST").respond_with_handler(
        lambda request: posted.append(json.loads(request.get_data())) or _ok())
    target = sink(f"webhook+http://127.0.0.1:{httpserver.port}/hooks/T000/B000/XXXX")
    assert deliver(target, alerts) == []
    assert [p["alert"] for p in posted] == alerts
    assert posted[1]["text"].startswith("[high] Detect RPC from Internet: TCP/135 from 45.83.64.2")
    assert target.name == f"webhook+http://127.0.0.1:{httpserver.port}/..."  # the path is the secret


def test_webhook_text_cannot_mention_or_link(httpserver, alerts):
    posted = []
    httpserver.expect_request("/hook", method="POST").respond_with_handler(
        lambda request: posted.append(json.loads(request.get_data())) or _ok())
    hostile = {**alerts[0], "reason": HOSTILE}
    deliver(sink(f"webhook+http://127.0.0.1:{httpserver.port}/hook", batch=True), [hostile, alerts[1]])
    text = posted[0]["text"]
    assert "<" not in text and ">" not in text.replace("->", "")
    assert "&lt;!channel&gt; &amp; &lt;http://evil|click&gt;" in text
    assert posted[0]["alerts"][0]["reason"] == HOSTILE  # the alert itself is unchanged


def test_webhook_statuses(httpserver, alerts):
    answers = iter([503, 200, 400])
    httpserver.expect_request("/hook", method="POST").respond_with_handler(
        lambda request: _ok(next(answers)))
    target = sink(f"webhook+http://127.0.0.1:{httpserver.port}/hook", retries=1)
    rejected = deliver(target, alerts[:2])
    assert [r.document for r in rejected] == [alerts[1]] and rejected[0].reason == "HTTP 400"
    httpserver.clear()
    httpserver.expect_request("/hook", method="POST").respond_with_data("gone", status=404)
    with pytest.raises(SinkError, match="HTTP 404"):
        deliver(target, alerts[:1])


def _ok(status: int = 200):
    return Response("ok", status=status)


def test_a_webhook_secret_is_not_shown_in_an_option_error():
    with pytest.raises(SinkError) as refused:
        make_sink(SinkSettings("webhook+https://hooks.slack.com/services/T0/B0/SeCrEt", {"bacth": True}))
    assert str(refused.value).startswith("webhook+https://hooks.slack.com/...: unknown option(s) bacth")
    assert "SeCrEt" not in str(refused.value)
