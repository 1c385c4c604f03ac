"""Configuration: the shipped example parses and claims every key, every mistake is one line
naming the key (all of them at once), relative paths follow the file, no file means the default.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import attrs
import pytest

from adapters.output import build_output
from protocols.errors import InvalidInputError
from receiver.config import (
    CONFIG_ENV,
    OUTPUT_KINDS,
    SECTIONS,
    TOP_LEVEL_KEYS,
    Config,
    ConfigError,
    NotifyConfig,
    config_file,
    load_config,
    parse_config,
    to_toml,
)
from tests.conftest import ROOT

EXAMPLE = ROOT / "docs" / "receiver.example.toml"


def errors_of(text: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.errors


def test_shipped_example_parses_and_builds_every_output() -> None:
    """docs/receiver.example.toml is a working configuration (it must not rot)."""
    config = load_config(EXAMPLE)
    assert [build_output(o).name for o in config.outputs] == ["sentinel", "surgard", "spool"]


def test_example_claims_every_key_of_every_section() -> None:
    """Every setting of the config classes is in the example, and nothing else is."""
    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert set(example) == {*SECTIONS, *TOP_LEVEL_KEYS}
    for name, cls in SECTIONS.items():
        fields = {a.name for a in attrs.fields(cls)}
        assert set(example[name]) == fields, f"[{name}] in {EXAMPLE.name} is out of step"
    assert {o["kind"] for o in example["outputs"]} == set(OUTPUT_KINDS)


def test_example_sections_show_the_embedded_defaults() -> None:
    """The example says it shows the embedded default: its section values are the defaults."""
    config = load_config(EXAMPLE)
    default = Config()
    for name in SECTIONS:
        if name == "store":
            continue  # made absolute (relative to the example's folder)
        assert getattr(config, name) == getattr(default, name), f"[{name}] differs from default"
    assert config.store.path == str(EXAMPLE.parent / default.store.path)


def test_no_file_is_the_embedded_default() -> None:
    """Without a file the receiver runs on loopback with SQLite under var/ and a spool output."""
    config = load_config(None)
    assert config == Config()
    assert config.dc09.address == ("127.0.0.1", 9000)
    assert config.store.path.startswith("var/")
    assert [o.kind for o in config.outputs] == ["spool"]
    assert config.log.level == "info"
    assert config.console.address == ("127.0.0.1", 8080)


def test_console_can_be_turned_off() -> None:
    """`[console] listen = ""` means no console; a typo in the section is refused."""
    assert parse_config('[console]\nlisten = ""\n').console.address is None
    with pytest.raises(InvalidInputError, match="manual_afer: unknown key"):
        parse_config("[console]\nmanual_afer = 5\n")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "[dc09]\nlisten = '127.0.0.1:99999'\n",
            "[dc09] listen: port 99999 is out of range 1-65535",
        ),
        (
            "[bridge]\nlisten = '9200'\n",
            '[bridge] listen: must be HOST:PORT (e.g. 127.0.0.1:9000), got "9200"',
        ),
        ("[dc09]\nudp = 'no'\n", '[dc09] udp: must be true or false, got "no"'),
        ("[dc09]\nidle_timeout = -5\n", "[dc09] idle_timeout: must be more than 0, got -5.0"),
        (
            "[dc09]\nmax_frame_bytes = 'big'\n",
            '[dc09] max_frame_bytes: must be a whole number, got "big"',
        ),
        ("[dc09]\nmax_frame_bytes = 4096.5\n", "[dc09] max_frame_bytes: must be a whole number"),
        ("[journal]\nmax_batch = true\n", "[journal] max_batch: must be a whole number, got true"),
        (
            "[dc09]\nwindow_policy = 'maybe'\n",
            '[dc09] window_policy: "maybe" is not one of reject, flag',
        ),
        (
            "[dc09]\nbad_crc_reply = 'ack'\n",
            '[dc09] bad_crc_reply: "ack" is not one of none, nak',
        ),
        (
            "[dc09]\nunknown_account = 'drop'\n",
            '[dc09] unknown_account: "drop" is not one of accept, duh, nak',
        ),
        ("[dc09]\nmax_connections = 0\n", "[dc09] max_connections: must be at least 1, got 0"),
        ("[dc09]\nframe_timeout = inf\n", "[dc09] frame_timeout: must be a finite number"),
        ("[bridge]\noffline_code = '35'\n", "[bridge] offline_code: must be a three-digit"),
        ("[bridge]\nmax_body = 4096\n", "[bridge] max_body: must be 64 to 1024, got 4096"),
        (
            "[log]\nlevel = 'loud'\n",
            '[log] level: "loud" is not one of debug, info, warning, error',
        ),
        ("log_signals = 1\n", "log_signals: must be true or false, got 1"),
        ("[dc09]\nlisen = '127.0.0.1:1'\n", "[dc09] lisen: unknown key (did you mean listen?)"),
        ("[dcO9]\n", "dcO9: unknown section (did you mean dc09?)"),
        ("dc09 = 5\n", "[dc09] must be a table, got 5"),
        (
            "[[outputs]]\nname = 'x'\nkind = 'fax'\n",
            '[[outputs]] x kind: "fax" is not one of sentinel, surgard, spool',
        ),
        ("[[outputs]]\nkind = 'spool'\n", "[[outputs]] #1 name: every output needs a name"),
        (
            "[[outputs]]\nname = 's'\nkind = 'sentinel'\naddress = '127.0.0.1:1'\ntimeout = '5'\n",
            "[[outputs]] s: timeout must be int or float",
        ),
        (
            "[[outputs]]\nname = 'a'\nkind = 'spool'\n[[outputs]]\nname = 'a'\nkind = 'spool'\n",
            "[[outputs]] a name: two outputs are named 'a'",
        ),
        ("not toml ===", "not valid TOML"),
    ],
)
def test_each_mistake_is_one_line_naming_the_key(text: str, error: str) -> None:
    """A bad value is refused when the file is read, in one line that names the key."""
    (line,) = errors_of(text)
    assert line.startswith(error)
    assert "\n" not in line
    assert "Attribute(" not in line


def test_every_mistake_is_reported_at_once() -> None:
    """Three mistakes in two sections: three lines, in file order, not just the first."""
    text = "[dc09]\nlisten = '127.0.0.1:99999'\nudp = 'no'\n[bridge]\nheartbeat_grace = 0.5\n"
    assert errors_of(text) == (
        "[dc09] listen: port 99999 is out of range 1-65535",
        '[dc09] udp: must be true or false, got "no"',
        "[bridge] heartbeat_grace: must be at least 1, got 0.5",
    )


def test_config_error_is_an_invalid_input_error() -> None:
    """Callers that catch the project's InvalidInputError still catch a bad configuration."""
    with pytest.raises(InvalidInputError):
        parse_config("[dc09]\nudp = 'no'\n")


def test_integers_are_accepted_for_seconds() -> None:
    """`idle_timeout = 60` is a number of seconds like 60.0."""
    assert parse_config("[dc09]\nidle_timeout = 60\n").dc09.idle_timeout == 60.0


def test_empty_outputs_turns_delivery_off() -> None:
    """`outputs = []` means no output at all (benchmarks use it)."""
    assert parse_config("outputs = []\n").outputs == ()


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    """The store and a spool directory written relative follow the file, not the cwd."""
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "receiver.toml"
    path.write_text(
        "[store]\npath = 'var/r.sqlite3'\n"
        "[[outputs]]\nname = 'files'\nkind = 'spool'\ndirectory = 'spool'\n"
        "[[outputs]]\nname = 'abs'\nkind = 'spool'\ndirectory = '/srv/spool'\n",
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.store.path == str(folder / "var" / "r.sqlite3")
    assert [o.settings["directory"] for o in config.outputs] == [
        str(folder / "spool"),
        "/srv/spool",
    ]


def test_a_file_without_outputs_spools_beside_itself(tmp_path: Path) -> None:
    """The default spool output of a file that names none is relative to the file too."""
    path = tmp_path / "receiver.toml"
    path.write_text("[dc09]\nudp = false\n", encoding="utf-8")
    config = load_config(path)
    assert config.store.path == str(tmp_path / "var" / "receiver.sqlite3")
    assert config.outputs[0].settings["directory"] == str(tmp_path / "var" / "spool")


@pytest.mark.parametrize("source", [None, EXAMPLE])
def test_effective_configuration_reads_back_the_same(source: Path | None) -> None:
    """`config check` prints TOML that parses back to the very same configuration."""
    config = load_config(source)
    assert parse_config(to_toml(config)) == config


def test_receiver_config_names_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """--config wins; without it RECEIVER_CONFIG names the file; without both, the default."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert config_file(None) is None
    monkeypatch.setenv(CONFIG_ENV, "/etc/receiver.toml")
    assert config_file(None) == Path("/etc/receiver.toml")
    assert config_file("mine.toml") == Path("mine.toml")


def test_example_notify_target_claims_every_key() -> None:
    """The example's [[notify]] table shows every key a target has ("from" for the sender)."""
    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    keys = {"from" if a.name == "sender" else a.name for a in attrs.fields(NotifyConfig)}
    assert [set(t) for t in example["notify"]] == [keys]
    target = load_config(EXAMPLE).notify[0]
    assert target.sender == "receiver@station.example"
    assert target.to == ("it@station.example",)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[[notify]]\nname = "a"\n', "[[notify]] a: needs to"),
        (
            '[[notify]]\nname = "a"\nto = ["x@y"]\nevents = ["fire"]\n',
            '[[notify]] a events: "fire" is not one of output_down',
        ),
        ('[[notify]]\nname = "a"\nto = "x@y"\n', "[[notify]] a to: must be a list of strings"),
        ('[[notify]]\nname = "a"\nto = ["nobody"]\n', '[[notify]] a to: "nobody" is not an e-mail'),
        ('[[notify]]\nname = "a"\nto = ["x@y"]\nsmtp_port = 0\n', "[[notify]] a smtp_port:"),
        ("[delivery]\ntrouble_after = 0\n", "[delivery] trouble_after: must be more than 0"),
    ],
)
def test_notify_mistakes_are_one_line_each(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert len(caught.value.errors) == 1
    assert caught.value.errors[0].startswith(error), caught.value.errors


def test_notify_targets_read_back_the_same() -> None:
    config = parse_config(
        '[[notify]]\nname = "a"\nto = ["x@y", "z@w"]\nfrom = "r@s"\nevents = ["failover"]\n'
    )
    assert parse_config(to_toml(config)) == config
    assert config.notify[0].events == ("failover",)
