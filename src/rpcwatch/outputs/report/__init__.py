"""The self-contained HTML report (``rpcwatch report``).

One file, no network: styles are inline and allowed by their hash in a Content-Security-
Policy whose default is ``'none'`` (no script, image, font or connection can load), charts
are inline SVG, and every value that came from a log or a rule goes through Jinja2's
autoescaping. The page runs no script at all.
"""
from __future__ import annotations

from rpcwatch.outputs.report.render import render_report, write_report

__all__ = ["render_report", "write_report"]
