"""The registry CLI: output, exit codes, one-line errors, on a SQLite file and on PostgreSQL.

Exit codes and the race run through the installed ``receiver`` console script in subprocesses;
the rest call its entry point (``receiver.cli.main``) in-process, which is the same code
without the ~0.4 s start-up per command.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from receiver.cli import main
from receiver.config import load_config
from receiver.registry import AccountSpec, Registry
from tests.receiver.conftest import store_section

SCRIPT = Path(sys.executable).with_name("receiver")


@pytest.fixture
def cfg(tmp_path: Path, store_location: str) -> Path:
    path = tmp_path / "receiver.toml"
    path.write_text(store_section(store_location), encoding="utf-8")
    return path


def db_of(cfg: Path) -> str:
    """The store the configuration names (its file, or its PostgreSQL URL)."""
    store = load_config(cfg).store
    return store.url or store.path


def run(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def cli(
    capsys: pytest.CaptureFixture[str], cfg: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """The console script's entry point, in-process; same shape as ``run``'s result."""
    code = main(["--config", str(cfg), *args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def seed(cfg: Path) -> None:
    """S1 with line 0 and line 1 (prefix ABC); dealer D1; site Main St; account 1234 on line 1."""
    reg = Registry.open(db_of(cfg))
    reg.add_station("S1")
    reg.add_line("S1", "1", "ABC")
    reg.add_dealer("D1")
    reg.add_site("Main St", dealer="D1")
    reg.add_account("S1", AccountSpec(line="1", number="1234", site="Main St"))
    reg.close()


def test_stations_sites_and_accounts_from_scratch(
    capsys: pytest.CaptureFixture[str], cfg: Path
) -> None:
    """Building a registry with the CLI works and lists what was added."""
    for args in (
        ("stations", "add", "S1"),
        ("stations", "add-line", "S1", "L01", "--prefix", "abc"),
        ("dealers", "add", "D1"),
        ("sites", "add", "Main St", "--dealer", "D1", "--address", "1 Main St"),
    ):
        done = cli(capsys, cfg, *args)
        assert (done.returncode, done.stderr) == (0, ""), args
    added = cli(
        capsys, cfg, "accounts", "add", "--station", "S1", "--line", "1", "0042",
        "--site", "Main St", "--key", "000102030405060708090a0b0c0d0e0f", "--supervision", "90",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout == "added account ABC0042 (line 1, number 0042) at station S1\n"
    listed = cli(capsys, cfg, "stations", "list", "--format", "csv")
    assert listed.stdout == "station,line,prefix,accounts\nS1,0,,0\nS1,1,ABC,1\n"


def test_collision_check_and_bad_input_exit_codes(
    capsys: pytest.CaptureFixture[str], cfg: Path
) -> None:
    """A taken number exits 1 naming the holder on one stderr line; bad input exits 2."""
    seed(cfg)
    refused = run(cfg, "accounts", "add", "--station", "S1", "abc1234")
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr == (
        'receiver: account ABC1234 is taken at station S1: held by site "Main St" '
        "(line 1, number 1234)\n"
    )
    taken = run(cfg, "accounts", "check", "--station", "S1", "--line", "0", "ABC1234")
    assert (taken.returncode, taken.stderr.count("\n")) == (1, 1)
    assert 'held by site "Main St" (line 1, number 1234)' in taken.stderr
    free = run(cfg, "accounts", "check", "--station", "S1", "--line", "L001", "01234")
    assert (free.returncode, free.stdout) == (0, "account ABC01234 is free at station S1\n")
    bad = run(cfg, "accounts", "add", "--station", "S1", "12-34")
    assert bad.returncode == 2
    assert bad.stderr == "receiver: account number must be 3-16 letters or digits, got '12-34'\n"
    missing = run(cfg, "accounts", "add", "--station", "S9", "5555")
    assert (missing.returncode, missing.stderr) == (1, "receiver: no station named 'S9'\n")
    flagged = cli(capsys, cfg, "accounts", "add", "--station", "S1", "--line", "1", "ABC9")
    assert flagged.returncode == 0
    assert flagged.stderr.startswith("receiver: warning: number ABC9 already starts with ABC")
    listed = json.loads(cli(capsys, cfg, "accounts", "list", "--format", "json").stdout)
    assert [(a["line"], a["number"], a["effective"]) for a in listed] == [
        ("1", "1234", "ABC1234"),
        ("1", "ABC9", "ABCABC9"),
    ]


def test_import_reports_every_collision_and_imports_nothing(
    capsys: pytest.CaptureFixture[str], cfg: Path, tmp_path: Path
) -> None:
    """Collisions with the registry and inside the file are all reported by CSV line; exit 1."""
    seed(cfg)
    csv_path = tmp_path / "accounts.csv"
    csv_path.write_text(
        "line,number,site\n"
        "0,5000,Main St\n"
        "0,ABC1234,\n"  # line 3: held by the registry
        "1,5000,\n"
        "0,abc5000,\n",  # line 5: same as line 4
        encoding="utf-8",
    )
    refused = cli(capsys, cfg, "accounts", "import", "--station", "S1", str(csv_path))
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "receiver: line 3: account ABC1234 (line 0, number ABC1234) is taken at station S1: "
        'held by site "Main St" (line 1, number 1234)',
        "receiver: line 5: account ABC5000 (line 0, number abc5000) collides with CSV line 4 "
        "(line 1, number 5000)",
        f"receiver: import refused: 2 collision(s) and 0 other problem(s) in {csv_path}; "
        "nothing imported",
    ]
    csv_path.write_text("line,number\n0,5000\n1,5000\n", encoding="utf-8")
    dry = cli(capsys, cfg, "accounts", "import", "--station", "S1", str(csv_path), "--dry-run")
    assert (dry.returncode, dry.stdout) == (
        0,
        "dry run: 2 account(s) would be imported to station S1\n",
    )
    listed = cli(capsys, cfg, "accounts", "list", "--station", "S1", "--format", "csv")
    assert listed.stdout.splitlines()[1:] == ["S1,1,1234,ABC1234,Main St,D1,,,,,"]
    done = cli(capsys, cfg, "accounts", "import", "--station", "S1", str(csv_path))
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "imported 2 account(s) to station S1\n",
        "",
    )


def test_two_racing_imports_do_not_both_win(cfg: Path, tmp_path: Path) -> None:
    """Two processes importing overlapping files at once: one wins, one exits 1, no duplicates."""
    seed(cfg)
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    # Line 1 adds ABC, so ABC13000..ABC13999 typed on line 0 collide with 13000..13999 on line 1.
    first.write_text("line,number\n" + "".join(f"0,ABC{n}\n" for n in range(10000, 14000)))
    second.write_text("line,number\n" + "".join(f"1,{n}\n" for n in range(13000, 17000)))
    procs = [
        subprocess.Popen(
            [str(SCRIPT), "--config", str(cfg), "accounts", "import", "--station", "S1", str(p)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in (first, second)
    ]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)  # read while waiting: the loser's report is long
        outcomes.append((proc.returncode, out, err))
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 1], outcomes
    winner = next(i for i, (code, _, _) in enumerate(outcomes) if code == 0)
    _, _, loser_err = outcomes[1 - winner]
    assert loser_err.count("is taken at station S1") == 1000
    assert "nothing imported" in loser_err.splitlines()[-1]
    reg = Registry.open(db_of(cfg))
    stored = [a["effective"] for a in reg.list_accounts("S1")]
    reg.close()
    assert len(stored) == len(set(stored)) == 4001
    won_numbers = range(10000, 14000) if winner == 0 else range(13000, 17000)
    assert set(stored) == {"ABC1234"} | {f"ABC{n}" for n in won_numbers}


def test_library_and_bridges(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    """library show prints each zone type's code and source; bridges print three-digit zones."""
    seed(cfg)
    for args in (
        ("library", "set", "--dealer", "D1", "Entry/Exit", "--code", "135"),
        ("library", "set", "--site", "Main St", "instant", "--disable"),
        ("bridges", "add", "--site", "Main St", "--serial", "ab:01", "--token", "t",
         "--channels", "4", "--model", "CKB304"),
        ("bridges", "set-channel", "AB:01", "2", "--zone", "12", "--zone-type", "24-Hour",
         "--camera", "Gate", "--code", "150"),
    ):  # fmt: skip
        done = cli(capsys, cfg, *args)
        assert (done.returncode, done.stderr) == (0, ""), args
    shown = cli(capsys, cfg, "library", "show", "--site", "Main St")
    assert shown.stdout.splitlines() == [
        "ZONE_TYPE            CODE  ENABLED  SOURCE",
        "entry_exit           135   yes      dealer",
        "follower             132   yes      builtin",
        "instant              130   no       site",
        "24_hour              133   yes      builtin",
        "exterior_instant     136   yes      builtin",
        "exterior_entry_exit  134   yes      builtin",
        "intercom_armed       420   yes      builtin",
    ]
    # Each channel shows the code and on/off that apply, and the level they come from.
    done = cli(capsys, cfg, "bridges", "set-channel", "AB:01", "4", "--zone-type", "Entry/Exit")
    assert done.returncode == 0
    listed = cli(capsys, cfg, "bridges", "list", "--format", "csv")
    assert listed.stdout.splitlines() == [
        "serial,model,site,account,channel,zone,zone_type,camera,code,enabled,source",
        "AB:01,CKB304,Main St,ABC1234,1,001,instant,,130,no,site",
        "AB:01,CKB304,Main St,ABC1234,2,012,24_hour,Gate,150,yes,channel",
        "AB:01,CKB304,Main St,ABC1234,3,003,instant,,130,no,site",
        "AB:01,CKB304,Main St,ABC1234,4,004,entry_exit,,135,yes,dealer",
    ]
    done = cli(capsys, cfg, "bridges", "set-channel", "AB:01", "1", "--enable")
    assert done.returncode == 0
    as_json = json.loads(cli(capsys, cfg, "bridges", "list", "--format", "json").stdout)
    assert [(r["code"], r["enabled"], r["source"]) for r in as_json] == [
        ("130", True, "channel"),
        ("150", True, "channel"),
        ("130", False, "site"),
        ("135", True, "dealer"),
    ]
    clash = cli(capsys, cfg, "bridges", "set-channel", "AB:01", "3", "--zone", "12")
    assert (clash.returncode, clash.stderr.count("\n")) == (1, 1)
    assert "zone 012 is already held" in clash.stderr
    unknown = cli(capsys, cfg, "library", "set", "--site", "Main St", "panic", "--code", "120")
    assert unknown.returncode == 2


def test_a_store_url_that_is_not_postgresql_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`[store] url` names a PostgreSQL server; anything else exits 2 saying so."""
    config = tmp_path / "receiver.toml"
    config.write_text('[store]\nurl = "mysql://r@127.0.0.1/db"\n', encoding="utf-8")
    done = cli(capsys, config, "stations", "list")
    # The configuration refuses it before the registry opens anything (since the merge of
    # `[store] url` into config.py): one line naming the file and the value, exit 2.
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "[store] url: must be a PostgreSQL URL" in done.stderr
    assert '"mysql://r@127.0.0.1/db"' in done.stderr


def test_an_unreachable_server_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No PostgreSQL server at the url (a closed loopback port): one line naming it, exit 1."""
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "receiver.toml"
    config.write_text(
        f'[store]\nurl = "postgresql://receiver@127.0.0.1:{port}/receiver"\n', encoding="utf-8"
    )
    done = cli(capsys, config, "accounts", "list")
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"receiver: cannot connect to the PostgreSQL store postgresql://receiver@127.0.0.1:{port}"
    )
    assert done.stderr.count("\n") == 1
