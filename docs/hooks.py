"""MkDocs hooks: what the site shows of the code is made from the code at build time.

- A line ``<!-- generated: cli -->`` becomes every command's ``--help``, as argparse prints it
  (``asyncdl.cli.build_parser``), ``<!-- generated: exit-statuses -->`` the table of
  ``asyncdl.exits.Exit``, and ``<!-- generated: error-tree -->`` the exception tree: no option
  list, exit status or error class is copied by hand into a page.
- The benchmark pages (``benchmarks/README.md``, ``results.md`` and its figure) join the site as
  they are, so a figure is written once, in ``benchmarks/results.md``.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
from pathlib import Path
from typing import Any
from unittest import mock

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

from asyncdl.cli import build_parser
from asyncdl.errors import AsyncdlError
from asyncdl.exits import Exit

ROOT = Path(__file__).resolve().parents[1]
#: Width of the rendered ``--help``: a classic terminal's, which fits the page's code blocks.
HELP_WIDTH = 80
#: Files of benchmarks/ that become pages (and files) of the site, at the same place.
BENCHMARK_FILES = (
    "README.md",
    "results.md",
    "throughput.png",
    "results.json",
    "hostile.md",
    "hostile.json",
    "capacity/results.md",
    "capacity/capacity.png",
    "capacity/results.json",
    "capacity/slow/results.md",
    "capacity/slow/capacity.png",
    "capacity/slow/results.json",
)
_DIRECTIVE = re.compile(r"^<!-- generated: ([\w-]+) -->$", re.M)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for name in BENCHMARK_FILES:
        place = f"benchmarks/{name}"
        files.append(File.generated(config, place, abs_src_path=str(ROOT / place)))
    return files


def on_page_markdown(markdown: str, page: Page, **_: Any) -> str:
    def expand(match: re.Match[str]) -> str:
        name = match[1]
        if name not in GENERATORS:
            raise PluginError(f"{page.file.src_uri}: no generator named {name!r} ({match[0]})")
        return GENERATORS[name]()

    return _DIRECTIVE.sub(expand, markdown)


def cli_reference() -> str:
    """``asyncdl --help``, then each command's, as sections of fenced text."""
    commands = _commands("asyncdl", build_parser())
    # argparse wraps to the terminal's width (COLUMNS), which the build's own would otherwise set.
    with mock.patch.dict(os.environ, {"COLUMNS": str(HELP_WIDTH + 2)}):
        return "\n".join(
            f"## `{title}`\n\n```text\n{command.format_help().rstrip()}\n```\n"
            for title, command in commands.items()
        )


def _commands(title: str, parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """``parser`` and its subcommands' parsers, theirs too (``asyncdl cache remove``), by title
    (argparse has no public way to list them)."""
    found = {title: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _commands(f"{title} {name}", sub)
    return found


def exit_statuses() -> str:
    """The table of ``asyncdl.exits.Exit``: status, name, meaning, whether a rerun resumes."""
    rows = [
        "| status | name | meaning | then |",
        "|---|---|---|---|",
        *(
            f"| `{int(status)}` | `{status.name}` | {status.meaning} | "
            f"{'run the same command again to resume' if status.resumable else ''} |"
            for status in Exit
        ),
    ]
    return "\n".join(rows) + "\n"


def error_tree() -> str:
    """The exception tree from ``AsyncdlError`` down, each class with its docstring's first line."""
    rows: list[tuple[str, str]] = []

    def walk(cls: type, prefix: str, last: bool, top: bool) -> None:
        builtins = [b.__name__ for b in cls.__bases__ if b.__module__ == "builtins"]
        name = cls.__name__ + (f" ({', '.join(builtins)})" if builtins and not top else "")
        rows.append((name if top else f"{prefix}{'└── ' if last else '├── '}{name}", _summary(cls)))
        below: list[type] = sorted(cls.__subclasses__(), key=_defined_at)
        inner = "" if top else prefix + ("    " if last else "│   ")
        for n, sub in enumerate(below):
            walk(sub, inner, n == len(below) - 1, False)

    walk(AsyncdlError, "", True, True)
    width = max(len(name) for name, _ in rows) + 2
    return "```text\n" + "\n".join(f"{n:<{width}}{doc}".rstrip() for n, doc in rows) + "\n```\n"


def _summary(cls: type) -> str:
    return (cls.__doc__ or "").strip().split("\n")[0].replace("``", "")


def _defined_at(cls: type) -> int:
    """Where a class is defined in its module, so the tree keeps the order of errors.py."""
    return inspect.getsourcelines(cls)[1]


GENERATORS = {"cli": cli_reference, "exit-statuses": exit_statuses, "error-tree": error_tree}
