"""Tabular output for the CLI: ``--format table|json|csv``."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

FORMATS = ("table", "json", "csv")


def add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(str(v) for v in value)
    return str(value)


def emit(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    fmt: str,
    out: TextIO | None = None,
) -> None:
    """Print rows in the requested format. JSON is one array of objects."""
    out = out or sys.stdout
    if fmt == "json":
        json.dump([{c: row.get(c) for c in columns} for row in rows], out, indent=2, default=str)
        out.write("\n")
        return
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_text(row.get(c)) for c in columns])
        return
    cells = [[_text(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    out.write("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    out.write("\n")
    for r in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")


class RowStream:
    """Rows printed as they arrive (``--follow``), flushed at once: a table with the header
    printed once and columns at least ``widths`` wide (a longer value widens its row only),
    CSV with one header, JSON as one object per line."""

    def __init__(
        self,
        columns: Sequence[str],
        fmt: str,
        widths: Mapping[str, int] | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.columns = tuple(columns)
        self.fmt = fmt
        self.out = out or sys.stdout
        widths = widths or {}
        self.widths = [max(len(c), widths.get(c, 0)) for c in self.columns]
        self._csv = csv.writer(self.out, lineterminator="\n")
        self._started = False

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not self._started:
            self._started = True
            if self.fmt == "csv":
                self._csv.writerow(self.columns)
            elif self.fmt == "table":
                self._line([c.upper() for c in self.columns])
        for row in rows:
            if self.fmt == "json":
                self.out.write(json.dumps({c: row.get(c) for c in self.columns}, default=str))
                self.out.write("\n")
            elif self.fmt == "csv":
                self._csv.writerow([_text(row.get(c)) for c in self.columns])
            else:
                self._line([_text(row.get(c)) for c in self.columns])
        self.out.flush()

    def _line(self, cells: Sequence[str]) -> None:
        text = "  ".join(v.ljust(w) for v, w in zip(cells, self.widths, strict=True))
        self.out.write(text.rstrip() + "\n")
