"""What every stream reader in ``protocols/`` returns when it has no event yet: ``NEED_DATA``.

One sentinel for all codecs (DC-09, bridge, Sur-Gard, the XML transport), compared with ``is``.
It is an enum member so that ``event is NEED_DATA`` narrows the type under mypy.
"""

from __future__ import annotations

import enum
from typing import Final


class NeedData(enum.Enum):
    """``next_event`` has nothing to return until more bytes arrive."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
