"""Drafts: a frozen attrs value object filled on the hot path at the cost of plain stores.

The trusted factories (``decode_common``, the payload fast paths, ``Dc09Engine`` for an
accepted frame, ``Signal.from_dc09``) build objects from values a parser already checked, so
they skip the validators. A frozen class refuses attribute stores (its ``__setattr__`` raises),
and filling its slots through their member descriptors costs about four times a plain store.
A *draft* is a plain class with the same slots, hence the same memory layout: a factory fills
a draft with plain attribute stores (which CPython specializes), then assigns ``__class__``,
and the object is an instance of the frozen class itself, equal to what its constructor builds.

Rules:
- Only for slotted attrs classes without a ``__weakref__`` slot (``weakref_slot=False``):
  CPython refuses the ``__class__`` assignment when a weakref slot follows the others.
- A factory fills every field before the assignment (an unfilled slot is an AttributeError
  when read); each factory has a property test holding its result equal to the constructor's.
- ``draft_of`` tries the assignment once at import: a layout this interpreter refuses fails at
  import, never on a frame.
"""

from __future__ import annotations

import types
from typing import Any

import attrs

from protocols.errors import LocalProtocolError


def draft_of(cls: type) -> type:
    """A plain class with ``cls``'s slots; ``draft.__class__ = cls`` once every slot is set."""
    names = tuple(a.name for a in attrs.fields(cls))
    if tuple(cls.__dict__.get("__slots__", ())) != names:
        raise LocalProtocolError(f"{cls.__name__} needs slots=True and weakref_slot=False")

    def body(namespace: dict[str, Any]) -> None:
        namespace["__slots__"] = names
        namespace["__module__"] = cls.__module__

    # The same bases (Generic[R] for a generic class): CPython compares the bases' layouts too.
    bases = getattr(cls, "__orig_bases__", cls.__bases__)
    draft = types.new_class(f"{cls.__name__}Draft", bases, exec_body=body)
    probe: Any = object.__new__(draft)
    for name in names:
        setattr(probe, name, None)
    probe.__class__ = cls  # TypeError here, at import, if the layouts differ
    return draft
