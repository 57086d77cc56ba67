"""Hypothesis strategies for random Sigma rules and events (differential tests)."""
from __future__ import annotations

from hypothesis import strategies as st

ALPHABET = "aAbB*?\\-/ _%é.1"
text = st.text(alphabet=ALPHABET, min_size=0, max_size=6)
FIELDS = {"s": "string", "t": "string", "n": "int", "x": "float", "f": "bool", "l": "list", "ip": "ip", "m": "missing"}


def event_values():
    return st.fixed_dictionaries({
        "s": st.one_of(st.none(), text),
        "t": st.one_of(st.none(), text, st.sampled_from(["135", " 42", "-7", "1.5", "true", "T", "abc"])),
        "n": st.one_of(st.none(), st.integers(-5, 200)),
        "x": st.one_of(st.none(), st.floats(-10, 200, allow_nan=False).map(lambda v: round(v, 2))),
        "f": st.one_of(st.none(), st.booleans()),
        "l": st.one_of(st.none(), st.lists(text, max_size=3)),
        "ip": st.one_of(st.none(), st.sampled_from(["10.1.2.3", "8.8.8.8", "::ffff:10.0.0.9", "FD00::1",
                                                    "2001:db8::7", "not-an-ip", "192.168.255.255"])),
    })


@st.composite
def item(draw):
    """One field: value entry of a selection."""
    name = draw(st.sampled_from(sorted(FIELDS)))
    kind = FIELDS[name]
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return f"{name}|exists", draw(st.booleans())
    if choice == 1:
        return name, None
    if kind in ("int", "float") or choice == 2:
        modifier = draw(st.sampled_from(["", "|gt", "|gte", "|lt", "|lte", "|neq"]))
        return name + modifier, draw(st.one_of(st.integers(-5, 200), st.floats(-5, 200).map(lambda v: round(v, 1))))
    if kind == "bool" or choice == 3:
        return name, draw(st.sampled_from([True, False, "true", "false", "T"]))
    if kind == "ip" or choice == 4:
        return name + "|cidr", draw(st.sampled_from(["10.0.0.0/8", "fc00::/7", "8.8.8.8", "0.0.0.0/0",
                                                     "::ffff:10.0.0.0/104", "2001:db8::/32"]))
    if choice == 5:
        return name + "|re", draw(st.sampled_from(["^a", "b$", "(?i)A.B", "[0-9]+", "é", "\\*"]))
    if choice == 6:
        other = draw(st.sampled_from(["s", "t", "l", "m"]))
        modifier = draw(st.sampled_from(["", "|startswith", "|endswith", "|contains"]))
        return name + "|fieldref" + modifier, other
    modifier = draw(st.sampled_from(["", "|contains", "|startswith", "|endswith", "|cased", "|contains|cased",
                                     "|contains|all"]))
    values = draw(st.lists(text, min_size=1, max_size=3))
    return name + modifier, values if len(values) > 1 or "|all" in modifier else values[0]


@st.composite
def rule(draw):
    selections = {}
    for index in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 5)) == 0:
            selections[f"sel{index}"] = draw(st.lists(text.filter(lambda t: t.strip("*?\\")), min_size=1, max_size=2))
        else:
            selections[f"sel{index}"] = dict(draw(st.lists(item(), min_size=1, max_size=3)))
    names = list(selections)
    condition = draw(st.sampled_from(["all of them", "1 of them", "1 of sel*", "all of sel*"]
                                     + [f"{'not ' if draw(st.booleans()) else ''}{names[0]}"]
                                     + ([f"{names[0]} and not {names[1]}", f"{names[0]} or {names[1]}",
                                         f"not ({names[0]} or {names[1]})"] if len(names) > 1 else [])))
    return {"title": "random", "logsource": {"product": "test"},
            "detection": {**selections, "condition": condition}}


