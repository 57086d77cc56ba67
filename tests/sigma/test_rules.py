"""The bundled rules: valid Sigma, the promised titles and tags, and the configured networks."""
from __future__ import annotations

import ipaddress

import pytest
from sigma.collection import SigmaCollection
from sigma.validation import SigmaValidator
from sigma.validators.core import validators

from rpcwatch.config import Config
from rpcwatch.networks import DEFAULT_INTERNAL, DEFAULT_NON_ROUTABLE
from rpcwatch.sigma.expr import CidrTest, Match, fields_of
from rpcwatch.sigma.loader import bundled_rule_files, load_rule_set
from rpcwatch.sigma.logsources import bind

#: validators that download MITRE data at run time (no network in CI); tags are checked below
ONLINE_VALIDATORS = {"attacktag", "d3_fendtag"}


def cidr_tests(expr):
    if isinstance(expr, Match) and isinstance(expr.test, CidrTest):
        yield expr.field, set(expr.test.networks)
    for child in getattr(expr, "items", ()) or ([expr.item] if hasattr(expr, "item") else []):
        yield from cidr_tests(child)


def test_bundled_rules_pass_pysigma_validators():
    collection = SigmaCollection.load_ruleset([str(p) for p in bundled_rule_files()])
    validator = SigmaValidator([cls for name, cls in validators.items() if name not in ONLINE_VALIDATORS])
    assert validator.validate_rules(collection) == []
    assert all(not rule.errors for rule in collection.rules)


def test_titles_levels_and_tags():
    rules = {r.title: r for r in load_rule_set().rules}
    assert set(rules) >= {"Detect RPC from Internet", "DCE/RPC from Internet"}
    for rule in (rules["Detect RPC from Internet"], rules["DCE/RPC from Internet"]):
        assert rule.level == "high"
        assert {"attack.initial-access", "attack.t1133", "attack.t1190"} <= set(rule.tags)
        assert "What to check" in rule.guide and "False positives" in rule.guide and "Response" in rule.guide
    assert rules["Detect RPC from Internet"].logsource["service"] == "conn"


def test_rule_files_carry_the_default_networks():
    """The CIDR lists written in the rules are the defaults of networks.py (one truth)."""
    rules = {r.title: r for r in load_rule_set(config=Config(), bundled=True).rules}
    expr = rules["Detect RPC from Internet"].expr
    lists = list(cidr_tests(expr))
    internal = {ipaddress.ip_network(n) for n in DEFAULT_INTERNAL}
    non_routable = {ipaddress.ip_network(n) for n in DEFAULT_NON_ROUTABLE}
    assert ("id.resp_h", internal) in lists
    assert ("id.orig_h", internal | non_routable) in lists  # the two filters, merged by field


def test_configured_networks_replace_the_lists():
    config = Config().with_internal(["10.50.0.0/16", "2001:db8:1::/48"])
    configured = {ipaddress.ip_network("10.50.0.0/16"), ipaddress.ip_network("2001:db8:1::/48")}
    non_routable = {ipaddress.ip_network(n) for n in DEFAULT_NON_ROUTABLE}
    for rule in load_rule_set(config=config).rules:
        lists = list(cidr_tests(rule.expr))
        if rule.logsource["product"] == "zeek":
            assert ("id.resp_h", configured) in lists
            assert ("id.orig_h", configured | non_routable) in lists
        else:  # the Windows rule: both orientations
            assert ("SourceIp", configured | non_routable) in lists
            assert ("DestinationIp", configured | non_routable) in lists


@pytest.mark.parametrize("title,tables", [
    ("Detect RPC from Internet", ["zeek.conn", "suricata.eve", "aws.vpcflow", "netfilter", "ecs"]),
    ("DCE/RPC from Internet", ["zeek.dce_rpc", "zeek.conn"]),
])
def test_routing(title, tables):
    rule = next(r for r in load_rule_set().rules if r.title == title)
    bound = bind(rule)
    assert [b.table for b in bound] == tables
    if title == "DCE/RPC from Internet":
        assert "service" in set(fields_of(bound[1].expr)) and "service" not in set(fields_of(bound[0].expr))
