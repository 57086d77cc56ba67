"""Triage: what an analyst needs on top of matched records.

``enrich`` gives every alert a reason, a risk score and its MITRE ATT&CK context;
``suppress`` folds repeated alerts per key and time window; ``evidence`` runs a second,
targeted pass for what came before and after; ``incidents`` places sources and victims
on the advisory's attack chain; ``exposure`` lists hosts that accepted RPC from the
internet; ``run`` ties them together for the command line and the report.
"""
