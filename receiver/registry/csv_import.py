"""CSV imports (accounts, bridges) and their report: all-or-nothing, every problem by CSV line.

Rules: the header is line 1 and must name the required columns; unknown columns are refused;
blank lines are skipped; a line numbers the CSV line a row ends on. Pure: the service checks
rows against the store and writes them in one transaction.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from typing import Literal, TextIO

from attrs import frozen

from protocols.errors import InvalidInputError
from receiver.account_numbers import (
    DEFAULT_LINE,
    AccountKey,
    effective_number,
    repeats_prefix,
)
from receiver.registry.records import AccountSpec, Holder, LineRecord, StationRecord, seconds


@frozen
class ImportProblem:
    """One problem in an import file, at its CSV line (the header is line 1)."""

    line: int
    kind: Literal["collision", "not_found", "invalid", "warning"]
    message: str

    def describe(self) -> str:
        label = "warning: " if self.kind == "warning" else ""
        return f"line {self.line}: {label}{self.message}"


@frozen
class ImportReport:
    station: str
    rows: int
    imported: int
    dry_run: bool
    problems: tuple[ImportProblem, ...]

    @property
    def errors(self) -> tuple[ImportProblem, ...]:
        return tuple(p for p in self.problems if p.kind != "warning")

    @property
    def warnings(self) -> tuple[ImportProblem, ...]:
        return tuple(p for p in self.problems if p.kind == "warning")

    @property
    def refused(self) -> bool:
        return bool(self.errors)


@frozen
class ImportRow:
    """One CSV data row and the line it ends on."""

    line: int
    values: Mapping[str, str]


IMPORT_REQUIRED = ("line", "number")
IMPORT_OPTIONAL = (
    "site",
    "key",
    "key_format",
    "supervision",
    "window_past",
    "window_future",
    "window_policy",
)
BRIDGE_IMPORT_REQUIRED = ("site", "serial", "token", "channels")
BRIDGE_IMPORT_OPTIONAL = ("model", "account", "first_zone")


def read_import_csv(
    stream: TextIO,
    required: tuple[str, ...] = IMPORT_REQUIRED,
    optional: tuple[str, ...] = IMPORT_OPTIONAL,
) -> list[ImportRow]:
    """The rows of an import file; the header must name every ``required`` column."""
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInputError("import file is empty (a header row is required)") from None
    except csv.Error as exc:
        raise InvalidInputError(f"line 1: not valid CSV: {exc}") from None
    columns = [c.strip().lower().lstrip("\ufeff") for c in header]
    missing = [c for c in required if c not in columns]
    if missing:
        raise InvalidInputError(f"line 1: import header lacks column(s) {', '.join(missing)}")
    unknown = [c for c in columns if c not in required + optional]
    if unknown:
        raise InvalidInputError(f"line 1: unknown column(s) {', '.join(unknown)}")
    rows = []
    try:
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(columns):
                raise InvalidInputError(
                    f"line {reader.line_num}: {len(record)} fields, header has {len(columns)}"
                )
            rows.append(ImportRow(reader.line_num, dict(zip(columns, record, strict=True))))
    except csv.Error as exc:
        raise InvalidInputError(f"line {reader.line_num}: not valid CSV: {exc}") from None
    return rows


def read_bridge_csv(stream: TextIO) -> list[ImportRow]:
    """The rows of a bridge import file (``site,serial,token,channels`` required)."""
    return read_import_csv(stream, BRIDGE_IMPORT_REQUIRED, BRIDGE_IMPORT_OPTIONAL)


@frozen
class AccountRow:
    """An import row that checked clean: what to insert."""

    spec: AccountSpec
    line: LineRecord
    site_id: int | None


def check_account_row(
    row: ImportRow,
    *,
    station: StationRecord,
    lines: Mapping[str, LineRecord],
    sites: Mapping[str, int],
    held: Mapping[str, Holder],
    in_file: dict[str, tuple[int, str, str]],
    problems: list[ImportProblem],
) -> AccountRow | None:
    """Validate one import row; append its problems; return what to insert if clean."""
    values = row.values
    try:
        spec = AccountSpec(
            line=values.get("line", "").strip() or DEFAULT_LINE,
            number=values.get("number", ""),
            site=values.get("site", "").strip() or None,
            key=(
                AccountKey.parse(values["key"], values.get("key_format", "").strip() or "hex")
                if values.get("key", "").strip()
                else None
            ),
            supervision=seconds(values.get("supervision"), "supervision"),
            window_past=seconds(values.get("window_past"), "window_past"),
            window_future=seconds(values.get("window_future"), "window_future"),
            window_policy=values.get("window_policy", "").strip() or None,
        )
    except (InvalidInputError, ValueError) as exc:
        problems.append(ImportProblem(row.line, "invalid", str(exc)))
        return None
    line = lines.get(spec.line)
    if line is None:
        problems.append(
            ImportProblem(
                row.line, "not_found", f"station {station.name!r} has no line {spec.line}"
            )
        )
        return None
    site_id = None
    if spec.site is not None:
        site_id = sites.get(spec.site)
        if site_id is None:
            problems.append(ImportProblem(row.line, "not_found", f"no site named {spec.site!r}"))
            return None
    effective = effective_number(line.prefix, spec.number)
    if repeats_prefix(line.prefix, spec.number):
        problems.append(
            ImportProblem(
                row.line,
                "warning",
                f"number {spec.number} already starts with {line.prefix}, the prefix line "
                f"{line.number} adds (likely a mistake)",
            )
        )
    holder = held.get(effective)
    clean = True
    if holder is not None:
        problems.append(
            ImportProblem(
                row.line,
                "collision",
                f"account {effective} (line {line.number}, number {spec.number}) is taken at "
                f"station {station.name}: {holder.describe()}",
            )
        )
        clean = False
    first = in_file.get(effective)
    if first is not None:
        problems.append(
            ImportProblem(
                row.line,
                "collision",
                f"account {effective} (line {line.number}, number {spec.number}) collides with "
                f"CSV line {first[0]} (line {first[1]}, number {first[2]})",
            )
        )
        clean = False
    else:
        in_file[effective] = (row.line, line.number, spec.number)
    return AccountRow(spec, line, site_id) if clean else None
