"""mkdocs hook: the command-line reference, rendered from the real argparse parsers.

``docs/reference/cli.md`` holds the marker ``<!-- cli-reference -->``; at build time it is
replaced by ``deepfake-edge --help`` and every subcommand's ``--help``, exactly as the
installed command prints them (``deepfake_edge.cli.build_parser``), so the page cannot
drift from the code. Building the parsers imports no heavy dependency (each subcommand
imports its extra only when it runs).
"""

from __future__ import annotations

import argparse
import importlib
import os
from typing import Any

MARKER = "<!-- cli-reference -->"
WIDTH = "88"  # argparse wraps to $COLUMNS; fixed so the page does not depend on the build terminal


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse offers no public accessor for its subcommands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def render() -> str:
    cli = importlib.import_module("deepfake_edge.cli")
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = cli.build_parser()
        blocks = ["## `deepfake-edge`", "", "```text", parser.format_help().rstrip(), "```", ""]
        for name, sub in _subparsers(parser).items():
            blocks += [f"## `deepfake-edge {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(blocks)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())
