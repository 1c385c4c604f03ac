"""What a station installs with (deploy/): the configurations parse with absolute store paths,
and the systemd unit and the container file point at the configuration they ship."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from receiver.config import load_config
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"([A-Za-z]+)=(.*)", line.strip())
        if match:
            settings.setdefault(match.group(1), []).append(match.group(2))
    return settings


@pytest.mark.parametrize("name", ["receiver.toml", "container.toml"])
def test_shipped_configurations_parse_with_the_store_in_var_lib(name: str) -> None:
    """Both shipped configurations are valid and keep the journal in /var/lib/receiver."""
    config = load_config(DEPLOY / name)
    assert config.store.path == "/var/lib/receiver/receiver.sqlite3"
    assert config.outputs[0].settings["directory"] == "/var/lib/receiver/spool"


def test_systemd_unit_runs_serve_as_its_own_user_hardened() -> None:
    """A dedicated user, restart on failure (not on a config mistake), hardening, and the
    state directory as the only writable path."""
    unit = unit_settings(DEPLOY / "receiver.service")
    assert unit["User"] == ["receiver"]
    assert unit["ExecStart"][0].endswith("/receiver serve --json-logs")
    assert "RECEIVER_CONFIG=/etc/receiver/receiver.toml" in unit["Environment"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2"]
    for option in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome"):
        assert unit[option][0] in ("yes", "strict"), option
    assert unit["ReadWritePaths"] == ["/var/lib/receiver"]


def test_containerfile_installs_its_configuration_where_it_points() -> None:
    """The image's RECEIVER_CONFIG is the file it copies, it runs unprivileged, and the store
    is in its volume."""
    text = (DEPLOY / "Containerfile").read_text(encoding="utf-8")
    assert "COPY deploy/container.toml /etc/receiver/receiver.toml" in text
    assert "RECEIVER_CONFIG=/etc/receiver/receiver.toml" in text
    assert "USER receiver" in text
    assert "VOLUME /var/lib/receiver" in text
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, flags=re.MULTILINE):
        assert (ROOT / source).exists(), source
