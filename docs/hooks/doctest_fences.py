"""griffe extension: show docstrings' ``>>>`` examples as Python console code blocks.

The package's docstrings use plain doctest blocks; Markdown would read ``>>> [...]`` as a
quote holding a reference link. Each run of lines from a ``>>>`` line to the next blank
line becomes a fenced ``pycon`` block, the way Python's own docs show such examples.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if not inside and stripped.startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}```pycon"]
            inside = True
        elif inside and not stripped:
            out += [f"{indent}```"]
            inside = False
        out.append(line)
    if inside:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **_: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
