"""``rpcw_ip_key``, the plain-SQL address key of portable CIDR mode, against
``rpcwatch.networks.address_key`` on DuckDB and Spark."""
from __future__ import annotations

import ipaddress
import random

import duckdb
import pytest

from rpcwatch.networks import address_key, parse_address
from rpcwatch.sigma.sql import Dialect, SparkDialect

EDGES = ["0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.5", " 10.0.0.1 ",
         "::", "::1", "1::", "::ffff:10.0.0.1", "::FFFF:10.0.0.1", "::1.2.3.4", "64:ff9b::192.0.2.1",
         "fe80::1%eth0", "[2001:db8::1]", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "1::2:3:4:5:6:7:8",
         "1:2:3:4:5:6:7:8:9", ":::", "1:::2", "12345::", "g::", "", "x", "1.2.3.4:135", "::ffff:1.2.3.256"]


def random_texts(count: int, seed: int = 7) -> list[str]:
    """Addresses of both versions, in the spellings logs use, and near-misses."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        v4 = ipaddress.IPv4Address(rng.getrandbits(32))
        v6 = ipaddress.IPv6Address(rng.getrandbits(128) >> rng.choice([0, 16, 64, 100]))
        texts.append(rng.choice([
            str(v4), str(v6), v6.exploded, str(v6).upper(), f"::ffff:{v4}", f"[{v6}]", f"{v6}%eth0",
            f" {v4} ", str(v4) + ".1", str(v6).replace("::", ":::", 1), f"{v6.exploded[:30]}:{v4}",
        ]))
    return texts + EDGES


def expected(text: str) -> str | None:
    address = parse_address(text)
    return address_key(address) if address is not None else None


def test_duckdb_ip_key_agrees_with_python():
    con = duckdb.connect()
    for statement in Dialect().ip_key_definitions():
        con.execute(statement)
    texts = random_texts(20000)
    keys = [row[0] for row in con.execute("SELECT rpcw_ip_key(t) FROM (SELECT unnest(?) AS t, "
                                          "generate_subscripts(?, 1) AS i) ORDER BY i", [texts, texts]).fetchall()]
    assert {t: k for t, k in zip(texts, keys) if k != expected(t)} == {}


@pytest.mark.slow
def test_spark_ip_key_agrees_with_python(spark_session):
    texts = random_texts(20000)
    frame = spark_session.createDataFrame([(i, t) for i, t in enumerate(texts)], "i INT, t STRING")
    rows = frame.selectExpr("i", f"{SparkDialect().ip_key('t')} AS k").collect()
    keys = {row.i: row.k for row in rows}
    assert {t: keys[i] for i, t in enumerate(texts) if keys[i] != expected(t)} == {}
