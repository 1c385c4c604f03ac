"""Configuration: the shipped example parses, typos are refused, no file means the default."""

from __future__ import annotations

import pytest

from adapters.output import build_output
from protocols.errors import InvalidInputError
from receiver.config import Config, load_config, parse_config
from tests.conftest import ROOT


def test_shipped_example_parses_and_builds_every_output() -> None:
    """docs/receiver.example.toml is a working configuration (it must not rot)."""
    config = load_config(ROOT / "docs" / "receiver.example.toml")
    assert [build_output(o).name for o in config.outputs] == ["sentinel", "surgard", "spool"]


def test_no_file_is_the_embedded_default() -> None:
    """Without a file the receiver runs on loopback with SQLite under var/ and a spool output."""
    config = load_config(None)
    assert config == Config()
    assert config.dc09.address == ("127.0.0.1", 9000)
    assert config.store.path.startswith("var/")
    assert [o.kind for o in config.outputs] == ["spool"]
    assert config.console.address == ("127.0.0.1", 8080)


def test_console_can_be_turned_off() -> None:
    """`[console] listen = ""` means no console; a typo in the section is refused."""
    assert parse_config('[console]\nlisten = ""\n').console.address is None
    with pytest.raises(InvalidInputError, match="unknown keys: manual_afer"):
        parse_config("[console]\nmanual_afer = 5\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[dc09]\nlisen = '127.0.0.1:1'\n", "unknown keys: lisen"),
        ("[dcO9]\n", "unknown sections: dcO9"),
        ("[dc09]\nwindow_policy = 'maybe'\n", "window_policy"),
        ("[dc09]\nlisten = 'nowhere'\n", None),
        ("[[outputs]]\nkind = 'spool'\n", "outputs"),
        ("not toml ===", "not valid TOML"),
    ],
)
def test_mistakes_are_refused_with_a_clear_message(text: str, message: str | None) -> None:
    """A typo or a bad value is an InvalidInputError naming it, never silently ignored."""

    def load() -> object:
        return parse_config(text).dc09.address  # the address is checked when used

    with pytest.raises(InvalidInputError) as info:
        load()
    if message:
        assert message in str(info.value)


def test_empty_outputs_turns_delivery_off() -> None:
    """`outputs = []` means no output at all (benchmarks use it)."""
    assert parse_config("outputs = []\n").outputs == ()
