"""Every unit in systemd/ passes `systemd-analyze verify` with no warning, against a scratch root
holding the system's own units and our real console scripts at the path the units name."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "systemd").glob("*.service")) + sorted((REPO / "systemd").glob("*.timer"))
INSTALL_BIN = Path("opt/opencdn/.venv/bin")  # where the units expect the install (README)


@pytest.fixture(scope="module")
def scratch_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sdroot")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / INSTALL_BIN).mkdir(parents=True)
    (root / "bin").mkdir()
    shutil.copy2("/bin/kill", root / "bin/kill")
    scripts = Path(sys.executable).parent
    for name in ("oca", "steering", "origin", "playback", "fill"):
        if (scripts / name).exists():
            shutil.copy2(scripts / name, root / INSTALL_BIN / name)
    for unit in UNITS:
        shutil.copy2(unit, root / "etc/systemd/system" / unit.name)
    return root


def test_units_exist():
    names = {u.name for u in UNITS}
    assert {"oca.service", "oca-fill.service", "oca-fill.timer", "steering.service", "origin.service"} <= names


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_analyze_verify(scratch_root, unit):
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={scratch_root}", "--man=no", "--generators=no",
         str(scratch_root / "etc/systemd/system" / unit.name)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr


def test_appliance_unit_is_hardened():
    text = (REPO / "systemd/oca.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "LimitNOFILE=", "ProtectSystem=strict",
                 "ReadWritePaths=", "NoNewPrivileges=yes", "PrivateTmp=yes", "User=oca",
                 "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"):
        assert line in text
