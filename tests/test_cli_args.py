"""Every subcommand refuses out-of-range numbers as a usage error (exit 2) naming the option.

The argument types are shared (``deepfake_edge.cli.common``); this walks the real
parser, so a subcommand that declares its own unchecked ``type=int`` shows up here.
"""

from __future__ import annotations

import argparse

import pytest

from deepfake_edge.cli import SUBCOMMANDS, build_parser

BAD_VALUES = {"--threads": ["-3", "0", "x"], "--port": ["-1", "70000"], "--threshold": ["1.5", "nan", "-0.1"],
              "--batch-size": ["0"], "--max-pixels": ["0"], "--timeout": ["0", "nan", "inf"]}


def _options(parser: argparse.ArgumentParser, command: str) -> dict[str, argparse.Action]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return {opt: action for action in sub.choices[command]._actions for opt in action.option_strings}  # noqa: SLF001


def _positionals(parser: argparse.ArgumentParser, command: str) -> list[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return ["x" for a in sub.choices[command]._actions if not a.option_strings and a.nargs != "?"]  # noqa: SLF001


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_out_of_range_numbers_are_usage_errors(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    options = _options(parser, command)
    checked = 0
    for option, values in BAD_VALUES.items():
        if option not in options:
            continue
        for value in values:
            with pytest.raises(SystemExit) as exit_info:
                parser.parse_args([command, *_positionals(parser, command), option, value])
            assert exit_info.value.code == 2, (command, option, value)
            assert option in capsys.readouterr().err
            checked += 1
    if command in ("predict", "serve", "demo", "evaluate"):
        assert checked, f"{command} has none of {sorted(BAD_VALUES)}"
