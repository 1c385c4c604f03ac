"""Drafts: a frozen value object filled by plain stores is the constructor's object, frozen."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.dc09 import Dc09Frame, Dc09Header
from protocols.dc09_engine import Accepted
from protocols.drafts import draft_of
from protocols.errors import LocalProtocolError
from protocols.payload import Event
from protocols.signal import Signal

_VALUES = st.one_of(st.none(), st.integers(), st.text(max_size=8), st.binary(max_size=8))


@attrs.frozen(weakref_slot=False)
class _Pair:
    left: Any
    right: Any = attrs.field(validator=attrs.validators.instance_of(int))


@given(_VALUES, st.integers())
def test_a_filled_draft_equals_the_constructed_object_and_stays_frozen(
    left: Any, right: int
) -> None:
    draft: Any = object.__new__(draft_of(_Pair))
    draft.left = left
    draft.right = right
    draft.__class__ = _Pair
    assert type(draft) is _Pair
    assert draft == _Pair(left, right)
    assert hash(draft) == hash(_Pair(left, right))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        draft.left = 1  # type: ignore[misc]


def test_a_class_with_a_weakref_slot_or_without_slots_is_refused_at_once() -> None:
    @attrs.frozen
    class WithWeakref:
        value: int

    @attrs.frozen(slots=False)
    class WithoutSlots:
        value: int

    for cls in (WithWeakref, WithoutSlots):
        with pytest.raises(LocalProtocolError):
            draft_of(cls)


@pytest.mark.parametrize("cls", [Signal, Dc09Header, Dc09Frame, Event, Accepted])
def test_every_hot_path_class_takes_drafts(cls: type) -> None:
    """The classes the trusted factories fill as drafts (a failure here would be one at import)."""
    assert draft_of(cls).__dict__["__slots__"] == tuple(a.name for a in attrs.fields(cls))
