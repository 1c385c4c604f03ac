"""The configuration as a user gives it to the CLI: `config check`, --config before or after
the subcommand, RECEIVER_CONFIG, a store found from any folder, `outputs` naming its file."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from receiver import __version__
from receiver.cli import main
from receiver.config import CONFIG_ENV

SCRIPT = Path(sys.executable).with_name("receiver")


@pytest.fixture(autouse=True)
def _no_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)


@pytest.fixture
def station_config(tmp_path: Path) -> Path:
    """A config in its own folder whose store path is relative (var/receiver.sqlite3)."""
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "receiver.toml"
    path.write_text("outputs = []\n[store]\npath = 'var/receiver.sqlite3'\n", encoding="utf-8")
    return path


def test_config_check_prints_the_effective_configuration(
    station_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0 and every key with its default, the store made absolute, as TOML."""
    assert main(["config", "check", "--config", str(station_config)]) == 0
    out = capsys.readouterr().out
    effective = tomllib.loads(out)
    assert effective["store"]["path"] == str(station_config.parent / "var" / "receiver.sqlite3")
    assert effective["bridge"]["hello_timeout"] == 30.0
    assert effective["dc09"]["listen"] == "127.0.0.1:9000"
    assert effective["log"]["level"] == "info"
    assert effective["outputs"] == []


def test_config_check_lists_every_mistake_one_per_line(tmp_path: Path) -> None:
    """Exit 2 and each mistake on its own line, naming the file and the key; no traceback."""
    path = tmp_path / "bad.toml"
    path.write_text(
        "[dc09]\nlisten = '127.0.0.1:99999'\nudp = 'no'\nidle_timeout = -5\n"
        "max_frame_bytes = 'big'\nwindow_policy = 'maybe'\n"
        "[bridge]\nlisten = '9200'\n[[outputs]]\nname = 'x'\nkind = 'fax'\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [str(SCRIPT), "config", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert [line.split(": ", 2)[2].split(":")[0] for line in lines] == [
        "[dc09] listen",
        "[dc09] udp",
        "[dc09] idle_timeout",
        "[dc09] max_frame_bytes",
        "[dc09] window_policy",
        "[bridge] listen",
        "[[outputs]] x kind",
    ]
    assert all(line.startswith(f"receiver: {path}: ") for line in lines)
    assert lines[0].endswith("[dc09] listen: port 99999 is out of range 1-65535")


def test_serve_refuses_a_bad_configuration_with_every_mistake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve` reads the file the same way: exit 2 before anything listens."""
    path = tmp_path / "bad.toml"
    path.write_text("[dc09]\nudp = 'no'\nmax_frame_bytes = 'big'\n", encoding="utf-8")
    assert main(["serve", "--config", str(path)]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 2


def test_config_before_or_after_the_subcommand(
    station_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`receiver --config F stations add` and `receiver stations add --config F` are the same."""
    assert main(["--config", str(station_config), "stations", "add", "S1"]) == 0
    assert main(["stations", "add", "S2", "--config", str(station_config)]) == 0
    capsys.readouterr()
    assert main(["stations", "list", "--format", "csv", "--config", str(station_config)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["S1,0,,0", "S2,0,,0"]


def test_receiver_config_and_relative_store_from_any_folder(
    station_config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With RECEIVER_CONFIG set, commands run from another folder use the file's store (beside
    the file), and nothing is created in the working directory."""
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv(CONFIG_ENV, str(station_config))
    assert main(["stations", "add", "S1"]) == 0
    assert (station_config.parent / "var" / "receiver.sqlite3").exists()
    capsys.readouterr()
    assert main(["history", "--format", "json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    assert list(elsewhere.iterdir()) == []


def test_history_without_a_store_says_so_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run from a folder with no store on the embedded default: exit 1 naming where it looked,
    not an empty history from a freshly created empty store."""
    monkeypatch.chdir(tmp_path)
    assert main(["history"]) == 1
    err = capsys.readouterr().err
    assert "var/receiver.sqlite3 does not exist" in err
    assert str(tmp_path) in err
    assert list(tmp_path.iterdir()) == []


def test_outputs_reads_the_running_receivers_file_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`receiver outputs` under RECEIVER_CONFIG shows that file's outputs and says which file."""
    path = tmp_path / "receiver.toml"
    path.write_text(
        "[store]\npath = 'r.sqlite3'\n[[outputs]]\nname = 'automation'\nkind = 'spool'\n",
        encoding="utf-8",
    )
    assert main(["--config", str(path), "stations", "add", "S1"]) == 0
    capsys.readouterr()
    monkeypatch.setenv(CONFIG_ENV, str(path))
    assert main(["outputs", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1].startswith("automation,spool,")
    assert f"configuration {path}" in captured.err
    assert str(tmp_path / "r.sqlite3") in captured.err


def test_outputs_on_the_default_says_it_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --config or RECEIVER_CONFIG, `outputs` says it read the embedded default."""
    monkeypatch.chdir(tmp_path)
    assert main(["stations", "add", "S1"]) == 0
    capsys.readouterr()
    assert main(["outputs"]) == 0
    assert "embedded default configuration" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`receiver --version` prints the installed version and exits 0."""
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"receiver {__version__}"
