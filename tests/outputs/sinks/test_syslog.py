"""The syslog sink against Debian's rsyslog on a loopback port: RFC 5424 with octet
counting over TCP and TLS, and CEF, checked as rsyslog received and parsed them."""
from __future__ import annotations

import json
import re

import pytest
import trustme
from outputs.sinks.conftest import HOSTILE
from outputs.sinks.rsyslog import Rsyslog

from rpcwatch.outputs.sinks import SinkSettings, SinkUnavailable, make_sink
from rpcwatch.outputs.sinks.syslog import cef_header_escape, cef_value_escape, sd_escape


@pytest.fixture
def tcp_receiver(tmp_path):
    receiver = Rsyslog(tmp_path, None)
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def tls_receiver(tmp_path, ca):
    certificate = ca.issue_cert("localhost")
    files = {"CA": tmp_path / "ca.pem", "Cert": tmp_path / "cert.pem", "Key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(files["CA"]))
    certificate.cert_chain_pems[0].write_to_path(str(files["Cert"]))
    certificate.private_key_pem.write_to_path(str(files["Key"]))
    receiver = Rsyslog(tmp_path, files)
    yield receiver
    receiver.stop()


def send(url, alerts, **options):
    sink = make_sink(SinkSettings(url, {"hostname": "sensor-1", **options}))
    sink.open()
    sink.write(alerts)
    sink.flush()
    return sink


def hostile(alerts):
    """The alert whose record id carries every character the formats must escape."""
    return next(a for a in alerts if a["original"]["uid"] == HOSTILE)


def test_rfc5424_over_tcp_as_rsyslog_parses_it(tcp_receiver, alerts):
    sink = send(f"syslog+tcp://127.0.0.1:{tcp_receiver.port}", alerts)
    received, structured = tcp_receiver.received(len(alerts))
    sink.close()
    assert len(received) == len(alerts)
    for alert, message, sd in zip(alerts, received, structured):
        assert message["pri"] == str(16 * 8 + 3)  # local0, rule level high -> err
        assert (message["hostname"], message["app"], message["msgid"]) == ("sensor-1", "rpcwatch", "alert")
        assert message["timestamp"] == alert["@timestamp"]
        assert json.loads(message["msg"]) == alert
        params = sd["rfc5424-sd"]["rpcwatch@32473"]
        assert params["eventid"] == alert["event"]["id"]
        assert params["dst"] == "10.20.0.10" and params["dstport"] == "135"
        assert params["record"] == alert["original"]["uid"]
    # the hostile record id (", \, ], CR LF) arrives unchanged through the escaping
    assert HOSTILE in [sd["rfc5424-sd"]["rpcwatch@32473"]["record"] for sd in structured]


def test_rfc5424_over_tls_verified_with_the_ca(tls_receiver, alerts, tmp_path):
    url = f"syslog+tls://localhost:{tls_receiver.port}"
    with pytest.raises(SinkUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        send(url, alerts)  # the system trust store does not know the test CA
    sink = send(url, alerts, ca_file=str(tmp_path / "ca.pem"))
    received, structured = tls_receiver.received(len(alerts))
    sink.close()
    assert [json.loads(m["msg"]) for m in received] == alerts
    assert HOSTILE in [sd["rfc5424-sd"]["rpcwatch@32473"]["record"] for sd in structured]


def test_cef_as_rsyslog_received_it(tcp_receiver, alerts):
    target = {**hostile(alerts), "rule": {**hostile(alerts)["rule"], "name": HOSTILE}}
    sink = send(f"syslog+tcp://127.0.0.1:{tcp_receiver.port}", [target, alerts[0]], format="cef")
    received, _ = tcp_receiver.received(2)
    sink.close()
    header, extension = parse_cef(received[0]["msg"])
    assert header[:4] == ["CEF:0", "rpcwatch", "rpcwatch", header[3]]
    assert header[4:] == [target["rule"]["id"], HOSTILE.replace("\r", " ").replace("\n", " "), "8"]
    assert extension["cs3"] == HOSTILE and extension["cs3Label"] == "record"
    assert extension["externalId"] == target["event"]["id"]
    assert extension["src"] == target["source"]["ip"] and extension["dpt"] == "135"
    assert int(extension["rt"]) == 1717236000250


def test_a_receiver_that_went_away_is_noticed_and_the_batch_sent_again(tmp_path, alerts):
    receiver = Rsyslog(tmp_path, None)
    url = f"syslog+tcp://127.0.0.1:{receiver.port}"
    sink = send(url, alerts[:2])
    receiver.received(2)
    receiver.stop()
    with pytest.raises(SinkUnavailable):
        sink.write(alerts[2:])
        sink.flush()
    (tmp_path / "received.jsonl").unlink()
    (tmp_path / "sd.jsonl").unlink()
    restarted = Rsyslog(tmp_path, None, receiver.port)
    sink.write(alerts[2:])
    sink.flush()
    received, _ = restarted.received(3)
    restarted.stop()
    assert [json.loads(m["msg"]) for m in received] == alerts[2:]


def test_escaping_rules():
    assert sd_escape('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    assert cef_header_escape("a|b\\c\nd") == "a\\|b\\\\c d"
    assert cef_value_escape("a=b\\c\r\nd|e") == "a\\=b\\\\c\\r\\nd|e"


def parse_cef(message: str) -> tuple[list[str], dict[str, str]]:
    """An independent reading of a CEF record: header fields split on unescaped pipes,
    extension keys found before unescaped equals signs."""
    parts, current, index = [], "", 0
    while len(parts) < 7:
        char = message[index]
        if char == "\\" and message[index + 1] in "|\\":
            current += message[index + 1]
            index += 2
            continue
        if char == "|":
            parts.append(current)
            current = ""
        else:
            current += char
        index += 1
    rest = message[index:]
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9]+)=", rest))
    extension = {}
    for number, key in enumerate(keys):
        end = keys[number + 1].start() if number + 1 < len(keys) else len(rest)
        value = rest[key.end():end]
        extension[key.group(1)] = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)),
                                         value)
    return parts, extension
