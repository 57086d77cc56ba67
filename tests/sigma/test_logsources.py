"""Log-source routes that carry a rule to a table of other names: a route that declares
``absent`` takes a rule only when it knows every field the rule reads; a test on an
absent field reads as on an unset value; routes without ``absent`` take every rule."""
from __future__ import annotations

import pytest
from sigma.rule import SigmaRule

from rpcwatch.sigma import logsources
from rpcwatch.sigma.compiler import RuleError, compile_rule, compile_selection
from rpcwatch.sigma.expr import FALSE, TRUE, fields_of
from rpcwatch.sigma.logsources import Route, bind

#: the tables of the Zeek conn routes that declare ``absent`` (mappings/logsources.yml)
STRICT_CONN_TABLES = ["suricata.eve", "aws.vpcflow", "netfilter", "ecs"]


def rule(detection: str, logsource: str = "product: zeek\n    service: conn") -> object:
    return compile_rule(SigmaRule.from_yaml(f"""
title: t
logsource:
    {logsource}
detection:
{detection}
"""))


def test_a_rule_whose_fields_the_other_logs_have_runs_on_each_under_their_names():
    bound = bind(rule("    sel:\n        id.resp_p: 135\n        proto: tcp\n    condition: sel"))
    assert [b.table for b in bound] == ["zeek.conn", *STRICT_CONN_TABLES]
    suricata = next(b for b in bound if b.table == "suricata.eve")
    assert set(fields_of(suricata.body)) == {"dest_port", "proto"}
    assert set(fields_of(suricata.where)) == {"event_type"}


def test_a_rule_reading_a_field_another_log_lacks_stays_on_zeek():
    """``history`` is neither renamed nor declared absent on the other logs: running the
    rule there would drop its test and widen it, so it does not run there."""
    bound = bind(rule("    sel:\n        id.resp_p: 135\n        history: S\n    condition: sel"))
    assert [b.table for b in bound] == ["zeek.conn"]


def test_keyword_rules_stay_on_their_own_log():
    bound = bind(rule("    keywords:\n        - 'dce_rpc'\n    condition: keywords"))
    assert [b.table for b in bound] == ["zeek.conn"]


@pytest.mark.parametrize("test,expected", [
    ("local_resp: true", FALSE),
    ("local_resp: 'T'", FALSE),
    ("local_resp: null", TRUE),
    ("local_resp|exists: false", TRUE),
    ("local_resp|exists: true", FALSE),
])
def test_a_test_on_an_absent_field_reads_as_on_an_unset_value(test, expected):
    bound = bind(rule(f"    sel:\n        {test}\n    condition: sel"))
    suricata = next(b for b in bound if b.table == "suricata.eve")
    assert suricata.body == expected


def test_the_seed_rule_keeps_its_address_tests_once_the_locality_tests_fold_away():
    seed = rule("""    tcp_135:
        proto: tcp
        id.resp_p: 135
    dst_internal:
        - id.resp_h|cidr: 10.0.0.0/8
        - local_resp: true
    filter_src_internal:
        - id.orig_h|cidr: 10.0.0.0/8
        - local_orig: true
    condition: tcp_135 and dst_internal and not filter_src_internal""")
    suricata = next(b for b in bind(seed) if b.table == "suricata.eve")
    assert set(fields_of(suricata.body)) == {"proto", "dest_port", "dest_ip", "src_ip"}
    assert "FALSE" not in repr(suricata.body) and "Const" not in repr(suricata.body)


def test_routes_without_absent_take_every_rule_as_before():
    """The firewall route renames four fields; a rule reading others still binds there."""
    bound = bind(rule("    sel:\n        dst_port: 135\n        action: drop\n    condition: sel",
                      "category: firewall"))
    assert [b.table for b in bound] == ["zeek.conn"]
    assert set(fields_of(bound[0].expr)) == {"id.resp_p", "action"}


def test_a_rule_no_route_takes_is_refused_with_the_reason(monkeypatch):
    strict = Route("flows", fields={"dst": "dst_addr"}, absent=frozenset({"local"}))
    monkeypatch.setattr(logsources, "routes_for", lambda logsource: (strict,))
    with pytest.raises(RuleError, match=r"no table for logsource .*: flows has no field history"):
        bind(rule("    sel:\n        dst: 10.0.0.1\n        history: S\n    condition: sel"))
    [bound] = bind(rule("    sel:\n        dst: 10.0.0.1\n        local: true\n    condition: sel"))
    assert bound.expr == FALSE  # the rule demands what the table cannot show


def test_a_routes_where_is_in_the_tables_names_and_not_checked(monkeypatch):
    strict = Route("flows", where=compile_selection({"kind": "flow"}), fields={"dst": "dst_addr"},
                   absent=frozenset())
    monkeypatch.setattr(logsources, "routes_for", lambda logsource: (strict,))
    [bound] = bind(rule("    sel:\n        dst: 10.0.0.1\n    condition: sel"))
    assert set(fields_of(bound.expr)) == {"kind", "dst_addr"}
