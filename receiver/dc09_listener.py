"""Where a DC-09 frame enters: TCP and UDP on one port (kept importable; the code lives in
``receiver.ingest``: ``dc09_server`` binds the port, ``dc09_loop`` serves it in one task,
``intake`` stores what the receiving engine accepted)."""

from __future__ import annotations

from receiver.ingest.dc09_server import Dc09Server
from receiver.ingest.intake import Dc09Intake, Staged, account_link

__all__ = ["Dc09Intake", "Dc09Server", "Staged", "account_link"]
