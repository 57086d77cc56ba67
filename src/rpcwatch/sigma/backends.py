"""The pySigma backends ``rules convert`` uses, with corrections where one gets these rules wrong."""
from __future__ import annotations

import ipaddress

from sigma.backends.elasticsearch import ESQLBackend, LuceneBackend
from sigma.backends.kusto import KustoBackend
from sigma.backends.splunk import SplunkBackend
from sigma.conditions import ConditionFieldEqualsValueExpression
from sigma.conversion.base import Backend
from sigma.conversion.state import ConversionState


class RpcwatchKustoBackend(KustoBackend):
    """pySigma's Kusto backend, corrected for these rules:

    - it writes ``ipv4_is_in_range`` for every network, so IPv6 networks (``fc00::/7``)
      never match; IPv6 networks need ``ipv6_is_in_range``;
    - it quotes a dotted name as ``'id.resp_p'`` (a string literal in KQL, so the
      comparison is constant) and leaves it bare in CIDR tests (``id.resp_h`` is read as a
      member access); KQL names a column with special characters as ``['id.resp_p']``.
    """

    # the list form is IPv4-only too; one expression per network keeps versions apart
    cidr_in_list_expression = None

    def convert_rule(self, rule, output_format=None, *args, **kwargs):
        """Each query on the table the pipeline chose (state ``query_table``); the
        backend's own table finalizer does not fit this pySigma's finalizer interface."""
        queries = super().convert_rule(rule, output_format, *args, **kwargs)
        table = self.last_processing_pipeline.state.get("query_table")
        return [f"{table}\n| where {query}" if table else query for query in queries]

    def escape_and_quote_field(self, field_name: str) -> str:
        if self.field_quote_pattern.match(field_name):
            return field_name
        return "['" + field_name.replace("\\", "\\\\").replace("'", "\\'") + "']"

    def convert_condition_field_eq_val_cidr(self, cond: ConditionFieldEqualsValueExpression,
                                            state: ConversionState) -> str:
        network = cond.value.network
        function = "ipv6_is_in_range" if isinstance(network, ipaddress.IPv6Network) else "ipv4_is_in_range"
        return f'{function}({self.escape_and_quote_field(cond.field)}, "{network}")'


BACKENDS: dict[str, type[Backend]] = {
    "splunk": SplunkBackend,
    "lucene": LuceneBackend,
    "esql": ESQLBackend,
    "kusto": RpcwatchKustoBackend,
}
