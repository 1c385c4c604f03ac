"""The station registry: stations and lines, dealers, sites, accounts, alarm library, bridges.

Split by what changes together:
- ``receiver.account_numbers``: the pure account-number rules the hot path imports
  (normalization, the effective form, line keys, the repeated-prefix flag, keys, serials);
- ``receiver.registry.records``: the value records and input rules of registry commands;
- ``receiver.registry.csv_import``: the CSV imports (accounts, bridges) and their report;
- ``receiver.registry.service``: the ``Registry`` service over the store (its SQL is in
  ``receiver.store.registry_sql``).

Every name that used to live in the single ``receiver/registry.py`` module is re-exported here.
"""

from __future__ import annotations

from receiver.account_numbers import (
    DEFAULT_LINE,
    KEY_FORMATS,
    AccountKey,
    KeyFormat,
    account_number,
    bridge_serial,
    effective_number,
    line_key,
    line_number,
    line_prefix,
    repeats_prefix,
)
from receiver.registry.csv_import import (
    BRIDGE_IMPORT_OPTIONAL,
    BRIDGE_IMPORT_REQUIRED,
    IMPORT_OPTIONAL,
    IMPORT_REQUIRED,
    ImportProblem,
    ImportReport,
    ImportRow,
    read_bridge_csv,
    read_import_csv,
)
from receiver.registry.records import (
    ARMING_SOURCES,
    BRIDGE_CHANNELS,
    WINDOW_POLICIES,
    AccountCheck,
    AccountSpec,
    Holder,
)
from receiver.registry.service import Progress, Registry

__all__ = [
    "ARMING_SOURCES",
    "BRIDGE_CHANNELS",
    "BRIDGE_IMPORT_OPTIONAL",
    "BRIDGE_IMPORT_REQUIRED",
    "DEFAULT_LINE",
    "IMPORT_OPTIONAL",
    "IMPORT_REQUIRED",
    "KEY_FORMATS",
    "WINDOW_POLICIES",
    "AccountCheck",
    "AccountKey",
    "AccountSpec",
    "Holder",
    "ImportProblem",
    "ImportReport",
    "ImportRow",
    "KeyFormat",
    "Progress",
    "Registry",
    "account_number",
    "bridge_serial",
    "effective_number",
    "line_key",
    "line_number",
    "line_prefix",
    "read_bridge_csv",
    "read_import_csv",
    "repeats_prefix",
]
