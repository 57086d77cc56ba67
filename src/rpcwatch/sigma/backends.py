"""pySigma's backends as ``rules convert`` uses them: found by plugin discovery, with
corrections where a backend gets these rules wrong or lets rule text break out of the
query. Corrections are mixins, so this module imports no backend: without the ``[siem]``
extra it still loads, and a backend rpcwatch does not know is used as it is.

Escaping rule text: the backends escape the quote and escape characters of their string
literals, but copy field names into the query as they are where a name does not need
quoting, and Splunk's and Lucene's quoting of a name leaves the quote character in it.
A rule's field name is attacker-controlled text like any other (a shared rule file), so
each correction escapes names as its language requires; line breaks inside string
literals are written as escapes where the language has them (KQL, ES|QL).
"""
from __future__ import annotations

import ipaddress
import re

from sigma.conditions import ConditionFieldEqualsValueExpression
from sigma.conversion.base import Backend
from sigma.conversion.state import ConversionState
from sigma.types import SigmaCIDRExpression

from rpcwatch.sigma.targets import installed_backends

#: line breaks and tabs in a string literal, as the C-style escapes KQL and ES|QL read
_LITERAL_ESCAPES = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


class SplunkCorrections:
    """A name is quoted ``"..."`` when it has more than word characters and dots; a ``"``
    or ``\\`` in it is escaped so the quoting holds."""

    field_escape = "\\"
    field_escape_pattern = re.compile(r"\\")


class LuceneCorrections:
    """Every character Lucene's query syntax gives a meaning is escaped in a name."""

    field_escape_pattern = re.compile(r'[\s*?+\-&|!(){}\[\]^"~:\\/<>=]')


class SplunkSpl2Corrections:
    """A name is quoted ``'...'``; a ``'`` or ``\\`` in it is escaped so the quoting holds."""

    field_escape = "\\"
    field_escape_pattern = re.compile(r"\\")


class EqlCorrections:
    """A name is quoted in backticks whenever it has more than word characters and dots
    (the backend quotes only names with spaces or a leading digit), a backtick inside
    doubled; literals escape line breaks as ``\\n``."""

    field_quote_pattern = re.compile(r"^[\w.@]+$")
    field_quote_pattern_negation = True
    field_escape = "`"
    field_escape_pattern = None
    add_escaped = '\\"'

    def quote_string(self, s: str) -> str:
        return super().quote_string(s.translate(_LITERAL_ESCAPES))  # type: ignore[misc]


class EsqlCorrections:
    """A name in backticks doubles a backtick inside it; literals escape line breaks."""

    field_escape = "`"
    field_escape_pattern = None

    def quote_string(self, s: str) -> str:
        return super().quote_string(s.translate(_LITERAL_ESCAPES))  # type: ignore[misc]


class KustoCorrections:
    """pySigma-backend-kusto 1.0, corrected for these rules:

    - it writes ``ipv4_is_in_range`` for every network, so IPv6 networks (``fc00::/7``)
      never match; IPv6 networks need ``ipv6_is_in_range``;
    - it quotes a dotted name as ``'id.resp_p'`` (a string literal in KQL, so the
      comparison is constant) and leaves it bare in CIDR tests (``id.resp_h`` is read as a
      member access); KQL names a column with special characters as ``['id.resp_p']``;
    - it writes line breaks into string literals as they are.
    """

    # the list form is IPv4-only too; one expression per network keeps versions apart
    cidr_in_list_expression = None

    def convert_rule(self, rule, output_format=None, *args, **kwargs):
        """Each query on the table the pipeline chose (state ``query_table``); the
        backend's own table finalizer does not fit this pySigma's finalizer interface."""
        queries = super().convert_rule(rule, output_format, *args, **kwargs)  # type: ignore[misc]
        table = self.last_processing_pipeline.state.get("query_table")  # type: ignore[attr-defined]
        return [f"{table}\n| where {query}" if table else query for query in queries]

    def escape_and_quote_field(self, field_name: str) -> str:
        if self.field_quote_pattern.match(field_name):  # type: ignore[attr-defined]
            return field_name
        return "['" + field_name.replace("\\", "\\\\").replace("'", "\\'") + "']"

    def quote_string(self, s: str) -> str:
        return super().quote_string(s.translate(_LITERAL_ESCAPES))  # type: ignore[misc]

    def convert_condition_field_eq_val_cidr(self, cond: ConditionFieldEqualsValueExpression,
                                            state: ConversionState) -> str:
        value = cond.value
        assert isinstance(value, SigmaCIDRExpression), "pySigma dispatches only CIDR values here"
        network = value.network
        function = "ipv6_is_in_range" if isinstance(network, ipaddress.IPv6Network) else "ipv4_is_in_range"
        return f'{function}({self.escape_and_quote_field(cond.field)}, "{network}")'


CORRECTIONS: dict[str, type] = {
    "splunk": SplunkCorrections,
    "lucene": LuceneCorrections,
    "esql": EsqlCorrections,
    "kusto": KustoCorrections,
    "eql": EqlCorrections,
    "splunk_spl2": SplunkSpl2Corrections,
}


def backend_class(name: str) -> type[Backend]:
    """The installed backend of that name, with rpcwatch's corrections when it has some."""
    base = installed_backends()[name]
    corrections = CORRECTIONS.get(name)
    if corrections is None:
        return base
    return type(f"Rpcwatch{base.__name__}", (corrections, base), {})
