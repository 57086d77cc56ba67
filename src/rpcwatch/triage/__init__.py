"""Triage: what an analyst needs on top of matched records.

``enrich`` gives every alert a reason, a risk score and its MITRE ATT&CK context;
``suppress`` folds repeated alerts per key and time window; ``evidence`` runs a second
streaming pass for the sources' records and the victims' own connections (``baseline``,
``later``); ``incidents`` places each source that got further than a probe on the
advisory's attack chain, with direct evidence and circumstantial evidence judged against
the victim's own day (``circumstantial``, ``beacon``); ``scanning`` folds the refused and
unanswered probes per target; ``exposure`` lists hosts that accepted RPC from the
internet; ``run`` ties them together for the command line and the report.
"""
