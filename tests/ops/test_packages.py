"""The Debian packages (`scripts/build-packages`, packaging/build.py), built once for this module, checked
three ways:

- as files, with dpkg-deb: control fields, conffiles (and no secret among them), maintainer scripts,
  units naming the packaged venv, entry points whose shebangs point into /opt/opencdn, no trace of the
  build's scratch path; and lintian: no error, no warning but the missing man pages;
- unpacked with `dpkg-deb -x` into a scratch directory and run from there: the relocated venv works
  wherever it lies (its interpreter finds its site-packages by its own path), compiled extensions load;
- installed for real: `dpkg -i`, `-r` and `--purge` inside a copy-on-write view of this machine (an
  overlayfs with / as its lower layer and a temporary directory as its upper one, in a private mount
  namespace, entered with chroot; /run and /tmp are fresh tmpfs there). The maintainer scripts run
  (adduser, directories), dpkg checks the Depends against a real Debian database, the installed configs
  pass check-config as the service users with secrets made as the README says, systemd-analyze
  verifies the installed units, and remove/purge leave nothing behind. Every write lands in the upper
  layer and the scripts see no running systemd, so nothing on this machine is installed, enabled,
  started or reloaded; the last test checks that the machine's own users, dpkg database and /opt are
  as before. (Plain `dpkg -i` on the CI machine would leave the system users behind, as Debian
  packages do, and a debootstrap chroot would fetch a whole Debian from the mirror on every run.)
The install tests need root (CI is root); elsewhere they skip, in CI they fail instead.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "scripts/build-packages"
PACKAGES = {
    "opencdn-oca": {"venv": "/opt/opencdn/oca", "user": "oca", "commands": ["oca"],
                    "units": ["oca.service", "oca-fill.service", "oca-fill.timer"],
                    "conffiles": ["/etc/oca/oca.toml", "/etc/oca/fill.toml", "/etc/logrotate.d/oca"]},
    "opencdn-control": {"venv": "/opt/opencdn/control", "user": "opencdn",
                        "commands": ["steering", "playback", "origin", "fill"],
                        "units": ["steering.service", "playback.service", "origin.service",
                                  "fill-plan.service", "fill-plan.timer"],
                        "conffiles": ["/etc/opencdn/steering.toml", "/etc/opencdn/fleet.toml",
                                      "/etc/opencdn/playback.toml", "/etc/opencdn/origin.toml",
                                      "/etc/opencdn/fill-plan.toml"]},
}
NAMES = sorted(PACKAGES)
IN_CI = bool(os.environ.get("CI"))

pytestmark = pytest.mark.timeout(600)


def _load_build_module():
    spec = importlib.util.spec_from_file_location("opencdn_packaging_build", REPO / "packaging/build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build = _load_build_module()


def need(condition: bool, reason: str) -> None:
    """Skip on a developer's machine that lacks it; in CI a missing prerequisite is a failure."""
    if not condition:
        (pytest.fail if IN_CI else pytest.skip)(reason)


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)


def python_version() -> str:
    return os.path.realpath("/usr/bin/python3").rsplit("python", 1)[1]


def unit_dir() -> str:
    return "/" + build.unit_dir()


# --- the build -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def debs(tmp_path_factory) -> dict[str, Path]:
    need(shutil.which("dpkg-deb") is not None and Path("/usr/bin/python3").exists(), "needs dpkg-deb, python3")
    out = tmp_path_factory.mktemp("debs")
    # gzip:1 keeps the test's build short (xz, the default, packs the same files in a third less space).
    result = sh([str(BUILD), "-o", str(out), "--compression", "gzip:1"], timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    built = {name: next(out.glob(f"{name}_*.deb")) for name in NAMES}
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in built.values())
    return built


@pytest.fixture(scope="module")
def unpacked(debs, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unpacked")
    for deb in debs.values():
        assert sh(["dpkg-deb", "-x", str(deb), str(root)]).returncode == 0
    return root


def test_appliance_ships_its_kernel_settings(unpacked):
    """60-opencdn-oca.conf sets tcp_migrate_req (reloads lose no queued connection); applied in a
    network namespace of its own, so the host's setting is left alone."""
    conf = unpacked / "usr/lib/sysctl.d/60-opencdn-oca.conf"
    assert "net.ipv4.tcp_migrate_req = 1" in conf.read_text()
    need(os.geteuid() == 0 and Path("/proc/sys/net/ipv4/tcp_migrate_req").exists(),
         "applying it needs root and Linux 5.14+")
    result = sh(["unshare", "--net", "sh", "-ec",
                 f"echo 0 > /proc/sys/net/ipv4/tcp_migrate_req; sysctl -q -p {conf}; "
                 "cat /proc/sys/net/ipv4/tcp_migrate_req"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def info(deb: Path, member: str) -> str:
    result = sh(["dpkg-deb", "--info", str(deb), member])
    assert result.returncode == 0, result.stderr
    return result.stdout


def contents(deb: Path) -> dict[str, str]:
    """path → its dpkg-deb --contents line (mode, owner, size, and `-> target` for links)."""
    lines = sh(["dpkg-deb", "--contents", str(deb)]).stdout.splitlines()
    out = {}
    for line in lines:
        path = line.split(None, 5)[5]
        out["/" + path.split(" -> ")[0].lstrip("./").rstrip("/")] = line
    return out


@pytest.mark.parametrize("name", NAMES)
def test_control_fields(debs, name):
    control = info(debs[name], "control")
    fields = dict(re.findall(r"^(\S+): (.*)$", control, re.M))
    assert fields["Package"] == name
    assert fields["Architecture"] == sh(["dpkg", "--print-architecture"]).stdout.strip()
    depends = [d.strip() for d in fields["Depends"].split(",")]
    assert f"python{python_version()}" in depends and "python3" in depends  # the venv links to /usr/bin/python3.X
    assert "adduser" in depends
    assert any(d.startswith("libc6 (>= 2.") for d in depends)  # the newest manylinux tag of its wheels
    if name == "opencdn-control":
        assert "ffmpeg" in depends  # origin ingest
    assert int(fields["Installed-Size"]) > 10_000
    assert all(len(line) <= 80 for line in control.splitlines() if line.startswith("  "))  # lintian's limit


@pytest.mark.parametrize("name", NAMES)
def test_contents_units_links_conffiles(debs, name):
    spec, files = PACKAGES[name], contents(debs[name])
    for unit in spec["units"]:
        assert f"{unit_dir()}/{unit}" in files
    for command in spec["commands"]:
        assert files[f"/usr/bin/{command}"].endswith(f"-> {spec['venv']}/bin/{command}")
        assert f"{spec['venv']}/bin/{command}" in files
    assert sorted(info(debs[name], "conffiles").split()) == sorted(spec["conffiles"])
    for conffile in spec["conffiles"]:
        assert conffile in files
    for doc in ("copyright", "changelog.gz", "README.Debian"):
        assert f"/usr/share/doc/{name}/{doc}" in files
    # Secrets are the admin's: no key file, callers file or token is ever shipped.
    assert not [p for p in files if re.search(r"keys\.toml$|callers|\.token$", p) and p.startswith("/etc")]
    # Every file is root's; nothing outside the FHS places a package may use.
    assert all(" root/root " in line for line in files.values())
    tops = {p.split("/")[1] for p in files if p != "/"}
    assert tops <= {"etc", "lib", "opt", "usr"}


@pytest.mark.parametrize("name", NAMES)
def test_maintainer_scripts(debs, name, tmp_path):
    spec = PACKAGES[name]
    sh(["dpkg-deb", "-e", str(debs[name]), str(tmp_path / "DEBIAN")])
    for script in ("postinst", "prerm", "postrm"):
        path = tmp_path / "DEBIAN" / script
        assert os.access(path, os.X_OK), script
        assert sh(["sh", "-n", str(path)]).returncode == 0, script
        assert "@" not in re.sub(r"#.*", "", path.read_text()), f"{script}: unfilled placeholder"
    postinst = (tmp_path / "DEBIAN/postinst").read_text()
    assert "adduser --system --group --quiet --home" in postinst and f" {spec['user']}\n" in postinst
    # Nothing is enabled or started on install: only running services are restarted on an upgrade.
    code = re.sub(r"#.*", "", postinst)
    assert "enable" not in code and not re.search(r"\bstart\b", code) and "try-restart" in code
    postrm = (tmp_path / "DEBIAN/postrm").read_text()
    purge = postrm.split("purge)", 1)[1].split(";;", 1)[0]
    assert "rm -rf" in purge and ("/var/lib/oca" in purge if name == "opencdn-oca" else "/var/lib/opencdn" in purge)
    remove = postrm.split("remove)", 1)[1].split(";;", 1)[0]
    assert "/var/lib" not in remove and "/etc" not in remove  # data and config stay until purge


@pytest.mark.parametrize("name", NAMES)
def test_units_run_the_packaged_venv_as_the_package_user(unpacked, name):
    spec = PACKAGES[name]
    for unit in spec["units"]:
        text = (unpacked / unit_dir().lstrip("/") / unit).read_text()
        assert "/opt/opencdn/.venv" not in text and "DynamicUser" not in text
        for m in re.finditer(r"^Exec\w+=[-@+!]*(/opt/\S+)", text, re.M):
            assert m.group(1).startswith(f"{spec['venv']}/bin/"), (unit, m.group(0))
            assert (unpacked / m.group(1).lstrip("/")).is_file()
        if unit.endswith(".service"):
            assert f"User={spec['user']}" in text, unit


@pytest.mark.parametrize("name", NAMES)
def test_entry_points_point_into_opt(unpacked, name):
    venv = PACKAGES[name]["venv"]
    bindir = unpacked / venv.lstrip("/") / "bin"
    scripts = [p for p in bindir.iterdir() if p.is_file() and not p.is_symlink()
               and p.read_bytes()[:2] == b"#!"]
    assert {"oca", "steering", "playback", "origin", "fill"} <= {p.name for p in scripts}
    for script in scripts:
        assert script.read_text().splitlines()[0] == f"#!{venv}/bin/python", script.name
    target = os.readlink(bindir / f"python{python_version()}")
    assert target == f"/usr/bin/python{python_version()}"
    cfg = (unpacked / venv.lstrip("/") / "pyvenv.cfg").read_text()
    assert f"command = /usr/bin/python{python_version()} -m venv {venv}" in cfg


def test_no_trace_of_the_build_directory(unpacked):
    result = sh(["grep", "-rlI", "--exclude=*.pyc", "opencdn-deb-", str(unpacked)])
    assert result.stdout == "", result.stdout[:2000]
    # Byte code is compiled for the final path, not the staging one.
    pyc = next((unpacked / "opt/opencdn/oca").rglob("oca/__pycache__/cli.*.pyc"))
    data = pyc.read_bytes()
    assert b"/opt/opencdn/oca/lib/" in data and str(unpacked).encode() not in data


def test_relocated_venv_runs_from_anywhere(unpacked, tmp_path):
    """The unpacked venv, run from a scratch directory, imports its compiled (stripped) extensions and
    checks the installed configs, with their absolute paths pointed into the scratch tree."""
    oca_py = unpacked / "opt/opencdn/oca/bin/python"
    ctl_py = unpacked / "opt/opencdn/control/bin/python"
    probe = "import sys, uvloop, httptools, xxhash, msgpack, maxminddb, aiohttp, boto3, oca; print(sys.prefix)"
    result = sh([str(oca_py), "-c", probe])
    assert result.returncode == 0 and result.stdout.strip() == str(unpacked / "opt/opencdn/oca"), result.stderr
    result = sh([str(oca_py), str(unpacked / "opt/opencdn/oca/bin/oca"), "--help"])
    assert result.returncode == 0 and "check-config" in result.stdout

    oca_toml = build.render_conffile(build.Conffile("x", str(unpacked / "etc/oca/oca.toml"), (
        ("tokens", "key_file", f'"{REPO / "config/keys.example.toml"}"'),
        ("pull_through", "key_file", f'"{REPO / "config/keys.example.toml"}"'),
        ("store", "index", f'"{tmp_path / "index.db"}"'))))
    (tmp_path / "oca.toml").write_text(oca_toml)
    result = sh([str(oca_py), str(unpacked / "opt/opencdn/oca/bin/oca"), "check-config",
                 "-c", str(tmp_path / "oca.toml"), "--allow-missing-disks"])
    assert result.returncode == 0, result.stdout + result.stderr

    steering_toml = build.render_conffile(build.Conffile("x", str(unpacked / "etc/opencdn/steering.toml"), (
        ("steering", "fleet_file", f'"{unpacked / "etc/opencdn/fleet.toml"}"'),
        ("steering", "key_file", f'"{REPO / "config/keys.example.toml"}"'),
        ("steering", "callers_file", f'"{REPO / "config/callers.example.toml"}"'),
        ("demand", "state_dir", f'"{tmp_path / "demand"}"'))))
    (tmp_path / "steering.toml").write_text(steering_toml)
    result = sh([str(ctl_py), str(unpacked / "opt/opencdn/control/bin/steering"), "check-config",
                 "-c", str(tmp_path / "steering.toml")])
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr


def test_lintian_finds_no_errors(debs):
    need(shutil.which("lintian") is not None, "lintian is not installed (scripts/setup installs it)")
    runs = [subprocess.Popen(["lintian", "--tag-display-limit", "0", str(deb)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for deb in debs.values()]
    outputs = [p.communicate(timeout=400)[0] for p in runs]
    tags = [line for out in outputs for line in out.splitlines() if re.match(r"[EW]: ", line)]
    errors = [t for t in tags if t.startswith("E: ")]
    assert not errors, "\n".join(errors[:50])
    # The one warning left: the commands have --help but no man page.
    assert all(" no-manual-page " in t for t in tags), "\n".join(tags[:50])


# --- installed for real, in a copy-on-write view of this machine ----------------------------------

ENTER = r"""
set -eu
base=$1; debs=$2; script=$3
mount --make-rprivate /
m=$base/merged
mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$m"
mount -t proc proc "$m/proc"
mount --rbind /dev "$m/dev"
mount -t tmpfs tmpfs "$m/run"
mount -t tmpfs tmpfs "$m/tmp"
mkdir "$m/tmp/debs"
mount --bind "$debs" "$m/tmp/debs"
exec chroot "$m" /bin/sh -eu -c "$script"
"""

# The install guide's secrets, made with the installed commands and owned as the guide says, and the
# disks the installed oca.toml names (the guide's step 1: mounted and owned by `oca`).
SECRETS = r"""
secret=$(/opt/opencdn/control/bin/python -c 'from contracts.keys import new_secret; print(new_secret())')
printf 'signing = "k1"\n[keys]\nk1 = "%s"\n' "$secret" > /tmp/master.toml
install -o root -g opencdn -m 0640 /tmp/master.toml /etc/opencdn/keys.toml
steering callers add playback --roles steer,fleet -c /etc/opencdn/steering.toml > /etc/opencdn/playback.token
steering callers add planner --roles demand,fleet -c /etc/opencdn/steering.toml > /etc/opencdn/fill-plan.token
chgrp opencdn /etc/opencdn/callers.toml /etc/opencdn/playback.token /etc/opencdn/fill-plan.token
chmod 0640 /etc/opencdn/callers.toml /etc/opencdn/playback.token /etc/opencdn/fill-plan.token
steering keys derive -c /etc/opencdn/steering.toml --appliance ams-1 -o /tmp/ams-1.keys.toml
install -o root -g oca -m 0640 /tmp/ams-1.keys.toml /etc/oca/keys.toml
steering keys derive -c /etc/opencdn/steering.toml --appliance ams-1 --pull-from origin -o /tmp/ams-1.pull.toml
install -o root -g oca -m 0640 /tmp/ams-1.pull.toml /etc/oca/pull-keys.toml
mkdir -p /srv/oca/ssd0 /srv/oca/ssd1 /srv/oca/hdd0 /srv/oca/hdd1
chown -R oca: /srv/oca
"""


class View:
    """An overlay of / whose upper layer persists in `base` between calls."""

    def __init__(self, base: Path, debs: Path) -> None:
        self.base = base
        self.debs = debs
        for d in ("upper", "work", "merged"):
            (base / d).mkdir()
        (base / "enter.sh").write_text(ENTER)

    def run(self, script: str, check: bool = True) -> subprocess.CompletedProcess:
        result = sh(["unshare", "--mount", "--propagation", "private", "sh", str(self.base / "enter.sh"),
                     str(self.base), str(self.debs), script], timeout=300)
        if check:
            assert result.returncode == 0, \
                f"{script}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
        return result

    def upper(self, path: str) -> Path:
        return self.base / "upper" / path.lstrip("/")


def host_state() -> dict:
    users = {u: sh(["getent", "passwd", u]).stdout for u in ("oca", "opencdn")}
    status = {n: sh(["dpkg-query", "-W", "-f=${Status}", n]).stdout for n in NAMES}
    paths = {p: os.path.lexists(p) for p in ("/opt/opencdn", "/etc/oca", "/etc/opencdn", "/var/lib/oca",
                                            "/usr/bin/oca", f"{unit_dir()}/oca.service")}
    return {"users": users, "status": status, "paths": paths}


@pytest.fixture(scope="module")
def view(debs, tmp_path_factory):
    need(os.geteuid() == 0, "installing into an overlay root needs root")
    need(shutil.which("unshare") is not None, "needs unshare (util-linux)")
    before = host_state()
    v = View(tmp_path_factory.mktemp("overlay-root"), next(iter(debs.values())).parent)
    probe = v.run("true", check=False)
    need(probe.returncode == 0, f"cannot mount an overlay of / here: {probe.stderr[-500:]}")
    v.run("dpkg -i /tmp/debs/opencdn-oca_*.deb /tmp/debs/opencdn-control_*.deb")
    v.run(SECRETS)
    v.host_before = before
    return v


def test_install_made_users_and_directories(view):
    out = view.run("getent passwd oca opencdn; stat -c '%n %U %G %a' /var/lib/oca /var/log/oca /var/lib/opencdn; "
                   "readlink /usr/bin/oca /usr/bin/steering; dpkg-query -W -f='${Package} ${Status}\\n' "
                   "opencdn-oca opencdn-control").stdout
    assert re.search(r"^oca:x:\d+:\d+::/var/lib/oca:/usr/sbin/nologin$", out, re.M), out
    assert re.search(r"^opencdn:x:\d+:\d+::/var/lib/opencdn:/usr/sbin/nologin$", out, re.M), out
    for line in ("/var/lib/oca oca oca 750", "/var/log/oca oca oca 750", "/var/lib/opencdn opencdn opencdn 750",
                 "/opt/opencdn/oca/bin/oca", "/opt/opencdn/control/bin/steering",
                 "opencdn-oca install ok installed", "opencdn-control install ok installed"):
        assert line in out, out


def test_installed_configs_pass_check_config_as_the_service_users(view):
    checks = {
        "oca": "oca check-config -c /etc/oca/oca.toml",
        "opencdn": "steering check-config -c /etc/opencdn/steering.toml && "
                   "playback check-config -c /etc/opencdn/playback.toml && "
                   "origin check-config -c /etc/opencdn/origin.toml && "
                   "fill check-config -c /etc/opencdn/fill-plan.toml",
    }
    for user, cmd in checks.items():
        result = view.run(f"runuser -u {user} -- sh -ec '{cmd}'")
        assert "error" not in result.stderr.lower(), result.stderr
    assert "appliance ams-1" in view.run("oca check-config -c /etc/oca/oca.toml").stdout


def test_installed_units_verify_and_none_is_enabled(view):
    need(shutil.which("systemd-analyze") is not None, "needs systemd-analyze")
    units = [f"{unit_dir()}/{u}" for spec in PACKAGES.values() for u in spec["units"]]
    result = view.run(f"systemd-analyze verify --man=no --generators=no {' '.join(units)}")
    assert not result.stdout.strip() and not result.stderr.strip(), result.stdout + result.stderr
    names = " ".join(u for spec in PACKAGES.values() for u in spec["units"])
    states = view.run(f"systemctl is-enabled {names} || true").stdout.split()
    assert len(states) == len(names.split()) and set(states) <= {"disabled", "static"}, states
    # The scripts saw no running systemd (fresh /run): nothing was reloaded, started or linked.
    assert not view.upper("/etc/systemd/system").exists() or not any(
        view.upper("/etc/systemd/system").rglob("*oca*"))


def test_logrotate_rotates_the_access_log(view):
    """A real rotation in the view: the file is renamed, a new one made for oca, and postrotate runs
    (its `systemctl kill -s USR1` finds no systemd there and is ignored)."""
    need(shutil.which("logrotate") is not None, "logrotate is not installed (scripts/setup installs it)")
    result = view.run("echo line > /var/log/oca/access.log; chown oca:oca /var/log/oca/access.log; "
                      "logrotate --verbose --force --state /tmp/logrotate.state /etc/logrotate.d/oca 2>&1; "
                      "stat -c '%n %U %G %a %s' /var/log/oca/access.log /var/log/oca/access.log.1")
    out = result.stdout
    assert "rotating pattern: /var/log/oca/*.log" in out and "running postrotate script" in out, out
    assert "error" not in out.lower(), out
    assert "/var/log/oca/access.log oca oca 640 0" in out and "/var/log/oca/access.log.1 oca oca" in out, out


def test_reinstall_keeps_an_edited_conffile(view):
    view.run("echo '# edited by the admin' >> /etc/oca/oca.toml")
    result = view.run("dpkg -i /tmp/debs/opencdn-oca_*.deb </dev/null && tail -n 1 /etc/oca/oca.toml")
    assert result.stdout.strip().endswith("# edited by the admin"), result.stdout


def test_remove_keeps_config_and_data_purge_leaves_nothing(view):
    unit = f"{unit_dir()}/oca.service"
    out = view.run("dpkg -r opencdn-oca opencdn-control; "
                   f"for p in /opt/opencdn /usr/bin/oca /usr/bin/steering {unit} "
                   "/etc/oca/oca.toml /etc/oca/keys.toml /etc/opencdn/steering.toml /var/lib/oca /var/lib/opencdn; do "
                   "  if [ -e $p ]; then echo present $p; else echo absent $p; fi; done; "
                   "dpkg-query -W -f='${Package} ${Status}\\n' opencdn-oca opencdn-control").stdout
    for p in ("/opt/opencdn", "/usr/bin/oca", "/usr/bin/steering", unit):
        assert f"absent {p}" in out, out
    for p in ("/etc/oca/oca.toml", "/etc/oca/keys.toml", "/etc/opencdn/steering.toml", "/var/lib/oca",
              "/var/lib/opencdn"):
        assert f"present {p}" in out, out
    assert "opencdn-oca deinstall ok config-files" in out

    out = view.run("dpkg --purge opencdn-oca opencdn-control; "
                   "for p in /etc/oca /etc/opencdn /etc/logrotate.d/oca /var/lib/oca /var/log/oca /var/lib/opencdn "
                   "/opt/opencdn; do if [ -e $p ]; then echo present $p; fi; done; "
                   "dpkg-query -W opencdn-oca opencdn-control 2>&1 || true").stdout
    assert "present" not in out, out
    assert "no packages found matching opencdn-oca" in out and "no packages found matching opencdn-control" in out


def test_the_machine_itself_is_untouched(view):
    assert host_state() == view.host_before
