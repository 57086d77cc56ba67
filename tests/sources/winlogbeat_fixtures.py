"""Winlogbeat-shaped documents made from real corpus events (no Winlogbeat sample is in
the corpus). The shapes follow reference.md §5.1.4: raw Winlogbeat (``winlog.*``, every
``winlog.event_data`` value a string) and the Sysmon module's ECS renames. This table of
renames is the test's own, written from the reference, not the reader's data file."""
from __future__ import annotations

import json
from pathlib import Path

from .windows_corpus import parser_records

#: Sysmon module renames per EventID (reference §5.1.4 for event 3; winlogbeat-sysmon.js
#: event10 for process access), with the ECS fields that are written as numbers
SYSMON_RENAMES = {
    3: {"UtcTime": "@timestamp", "ProcessGuid": "process.entity_id", "ProcessId": "process.pid",
        "Image": "process.executable", "Protocol": "network.transport", "SourceIp": "source.ip",
        "SourceHostname": "source.domain", "SourcePort": "source.port", "DestinationIp": "destination.ip",
        "DestinationHostname": "destination.domain", "DestinationPort": "destination.port",
        "DestinationPortName": "network.protocol", "RuleName": "rule.name"},
    10: {"UtcTime": "@timestamp", "SourceProcessGUID": "process.entity_id", "SourceProcessId": "process.pid",
         "SourceThreadId": "process.thread.id", "SourceImage": "process.executable"},
}
NUMERIC_ECS = {"process.pid", "process.thread.id", "source.port", "destination.port"}
SYSMON_CHANNEL = "Microsoft-Windows-Sysmon/Operational"


def corpus_events(path: Path) -> list[dict]:
    """The ``Event`` objects the evtx parser renders for a corpus file."""
    return [json.loads(record["data"])["Event"] for record in parser_records(path)]


def raw_winlogbeat(event: dict) -> dict:
    system = event["System"]
    event_id = _event_id(system)
    winlog = {
        "api": "wineventlog",
        "channel": system["Channel"],
        "computer_name": system["Computer"],
        "event_id": str(event_id),
        "provider_name": system["Provider"]["#attributes"]["Name"],
        "provider_guid": "{" + system["Provider"]["#attributes"]["Guid"].strip("{}") + "}",
        "record_id": system["EventRecordID"],
        "process": {"pid": system["Execution"]["#attributes"]["ProcessID"],
                    "thread": {"id": system["Execution"]["#attributes"]["ThreadID"]}},
        "version": system.get("Version"),
        "time_created": system["TimeCreated"]["#attributes"]["SystemTime"],
        "opcode": "Info",
        "event_data": {name: _as_winlogbeat_text(value) for name, value in (event.get("EventData") or {}).items()},
    }
    if system.get("Security"):
        winlog["user"] = {"identifier": system["Security"]["#attributes"]["UserID"]}
    return {"@timestamp": winlog["time_created"], "event": {"code": str(event_id), "kind": "event"},
            "host": {"name": system["Computer"]}, "log": {"level": "information"}, "winlog": winlog}


def sysmon_module(document: dict, directions: tuple[str, str] = ("egress", "ingress")) -> dict:
    """The Sysmon module's renames (mode "rename": the originals disappear), for the
    EventIDs in :data:`SYSMON_RENAMES`; other events stay raw."""
    winlog = document["winlog"]
    renames = SYSMON_RENAMES.get(int(winlog["event_id"]))
    if winlog["channel"] != SYSMON_CHANNEL or renames is None:
        return document
    data = winlog["event_data"]
    winlog["record_id"] = str(winlog["record_id"])  # the module's ingest pipeline makes it a string
    if "UtcTime" in data:  # the module parses it into an ISO-8601 @timestamp
        data["UtcTime"] = data["UtcTime"].replace(" ", "T") + "Z"
    for native, ecs in renames.items():
        if native in data:
            value = data.pop(native)
            _put(document, ecs, int(value) if ecs in NUMERIC_ECS else value)
            if ecs == "process.executable":
                _put(document, "process.name", value.rsplit("\\", 1)[-1])
    if "\\" in data.get("User", ""):
        domain, name = data.pop("User").split("\\")
        _put(document, "user.domain", domain)
        _put(document, "user.name", name)
    if "Initiated" in data:
        _put(document, "network.direction", directions[0] if data.pop("Initiated") == "true" else directions[1])
    if "SourceIsIpv6" in data:
        _put(document, "network.type", "ipv6" if data.pop("SourceIsIpv6") == "true" else "ipv4")
        data.pop("DestinationIsIpv6", None)
    return document


def dotted(document: dict, prefix: str = "") -> dict:
    """The same document with dotted keys instead of nested objects."""
    flat = {}
    for key, value in document.items():
        if isinstance(value, dict) and value:
            flat.update(dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def write_ndjson(path: Path, documents: list[dict]) -> Path:
    path.write_text("".join(json.dumps(document) + "\n" for document in documents))
    return path


def _event_id(system: dict) -> int:
    event_id = system["EventID"]
    return event_id["#text"] if isinstance(event_id, dict) else event_id


def _as_winlogbeat_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _put(document: dict, dotted_name: str, value) -> None:
    *parents, leaf = dotted_name.split(".")
    node = document
    for parent in parents:
        node = node.setdefault(parent, {})
    node[leaf] = value
