#!/usr/bin/env python3
"""Builds the Debian packages with dpkg-deb alone: `opencdn-oca` (the appliance) and `opencdn-control`
(steering, playback, origin and the fill planner). `scripts/build-packages` runs it; stdlib only.

Strategy (dh-virtualenv's, without debhelper):
- One virtualenv is built per run with Debian's own interpreter (/usr/bin/python3.X, which the
  packages then depend on), from a wheel of this tree and the versions pinned in constraints.txt
  (`pip install --no-compile`), in a scratch directory. pip and setuptools are taken out again:
  nothing installs into a packaged venv.
- It is copied under each package's staging root at its final place (/opt/opencdn/oca,
  /opt/opencdn/control) and relocated there: the entry points' shebangs, the activate scripts and
  pyvenv.cfg name the final path; a build fails if any text file still names the scratch path.
- Byte code is compiled for the final path (`compileall -s STAGE -p /`, unchecked-hash .pyc files, so
  dpkg's mtimes don't matter) and shipped: dpkg owns every file, a read-only /opt (ProtectSystem=strict)
  starts as fast as a writable one, and nothing is left behind on removal.
- Units come from systemd/ (`oca*` to the appliance, the rest to the control plane) with their paths
  rewritten to the package's venv; the control plane's DynamicUser= becomes the `opencdn` system user so
  root:opencdn 0640 secrets in /etc/opencdn are readable. Example configs become conffiles in /etc/oca
  and /etc/opencdn with the few keys an installed layout needs set (relative example paths made
  absolute, state under /var/lib); secrets (keys, callers, tokens) are never shipped.
- Maintainer scripts (packaging/maintscripts/) are templates shared by both packages: the unit names
  and state directories are filled in from the packaged units. Nothing is enabled or started on install.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "packaging"
PROJECT_PACKAGES = ("contracts", "oca", "steering", "origin", "fill", "playback")
MAINTAINER = "opencdn maintainers <maintainers@opencdn.invalid>"


class BuildError(Exception):
    """A step failed; the message says which and why."""


@dataclass(frozen=True)
class Conffile:
    dest: str                                  # absolute path on the installed system
    source: str                                # path in the repo
    settings: tuple[tuple[str, str, str], ...] = ()  # (table, key, TOML value) set for the installed layout


@dataclass(frozen=True)
class Package:
    name: str
    venv: str                                  # the venv's final path
    commands: tuple[str, ...]                  # entry points linked into /usr/bin
    user: str                                  # the system user the units run as
    depends: tuple[str, ...]
    recommends: tuple[str, ...]
    summary: str
    description: str
    conffiles: tuple[Conffile, ...]
    secrets: tuple[str, ...]                   # files the admin creates (removed on purge only)
    home: str                                  # the user's home; postinst makes it with `dirs`
    dirs: tuple[str, ...]                      # made (owned by the user, 0750) in postinst, removed on purge
    unit_filter: str                           # "oca" (units named oca*) or "rest"
    user_units: bool = False                   # DynamicUser= → User=/Group= of the package's user
    sysctl: str | None = None                  # packaging/sysctl/<this>.conf → /usr/lib/sysctl.d/60-<pkg>.conf


def packages() -> dict[str, Package]:
    oca = Package(
        name="opencdn-oca", venv="/opt/opencdn/oca", commands=("oca",), user="oca",
        depends=("adduser",), recommends=("logrotate",),
        summary="opencdn appliance (oca): serves signed byte ranges, fills nightly",
        description=(
            "The appliance an ISP installs on bare metal: worker processes on one port\n"
            "send byte ranges of whole encoded files with sendfile, check signed URLs,\n"
            "report health, load and inventory to steering, and fill themselves each\n"
            "night from peers or the origin. Ships its own Python environment under\n"
            "/opt/opencdn/oca, the systemd units oca.service and oca-fill.timer (not\n"
            "enabled) and /etc/oca/oca.toml."),
        conffiles=(
            Conffile("/etc/oca/oca.toml", "config/oca.example.toml", (
                ("tokens", "key_file", '"/etc/oca/keys.toml"'),
                ("pull_through", "key_file", '"/etc/oca/pull-keys.toml"'))),
            Conffile("/etc/oca/fill.toml", "config/fill.example.toml"),
            Conffile("/etc/logrotate.d/oca", "packaging/logrotate/oca"),
        ),
        secrets=("/etc/oca/keys.toml", "/etc/oca/pull-keys.toml"),
        home="/var/lib/oca", dirs=("/var/lib/oca", "/var/log/oca"), unit_filter="oca", sysctl="oca")
    control = Package(
        name="opencdn-control", venv="/opt/opencdn/control",
        commands=("steering", "playback", "origin", "fill"), user="opencdn",
        depends=("adduser", "ffmpeg"), recommends=(),
        summary="opencdn control plane: steering, playback, origin and the fill planner",
        description=(
            "Steering ranks appliances for each client and signs their URLs, playback\n"
            "serves the catalog and steered HLS/DASH manifests, origin ingests titles\n"
            "with ffmpeg and serves fills, and the fill planner writes each appliance's\n"
            "nightly manifest. Ships its own Python environment under\n"
            "/opt/opencdn/control, the systemd units (not enabled) and example configs\n"
            "in /etc/opencdn."),
        conffiles=(
            Conffile("/etc/opencdn/steering.toml", "config/steering.example.toml", (
                ("steering", "fleet_file", '"/etc/opencdn/fleet.toml"'),
                ("steering", "key_file", '"/etc/opencdn/keys.toml"'),
                ("steering", "callers_file", '"/etc/opencdn/callers.toml"'),
                ("demand", "state_dir", '"/var/lib/opencdn-steering/demand"'))),
            Conffile("/etc/opencdn/fleet.toml", "config/fleet.example.toml"),
            Conffile("/etc/opencdn/playback.toml", "config/playback.example.toml", (
                ("playback", "steering_token_file", '"/etc/opencdn/playback.token"'),
                ("playback", "callers_file", '"/etc/opencdn/callers.toml"'),
                ("demand", "state_dir", '"/var/lib/opencdn-playback/demand"'))),
            Conffile("/etc/opencdn/origin.toml", "config/origin.example.toml", (
                ("serve", "key_file", '"/etc/opencdn/keys.toml"'),)),
            Conffile("/etc/opencdn/fill-plan.toml", "config/fill-plan.example.toml", (
                ("planner", "key_file", '"/etc/opencdn/keys.toml"'),
                ("steering", "token_file", '"/etc/opencdn/fill-plan.token"'))),
        ),
        secrets=("/etc/opencdn/keys.toml", "/etc/opencdn/callers.toml", "/etc/opencdn/playback.token",
                 "/etc/opencdn/fill-plan.token"),
        home="/var/lib/opencdn", dirs=("/var/lib/opencdn",), unit_filter="rest", user_units=True)
    return {p.name: p for p in (oca, control)}


# --- small helpers -------------------------------------------------------------------------------

def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if result.returncode != 0:
        raise BuildError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
                         f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def log(msg: str) -> None:
    print(f"build-packages: {msg}", file=sys.stderr, flush=True)


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def deb_arch() -> str:
    return run(["dpkg", "--print-architecture"]).stdout.strip()


def interpreter(python: str) -> tuple[Path, str]:
    """The Debian interpreter the venv links to, by its versioned name (so a later default python3
    of another minor version never silently breaks the venv), and that version."""
    real = Path(os.path.realpath(python))
    version = run([str(real), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()
    versioned = Path(f"/usr/bin/python{version}")
    if not versioned.exists():
        raise BuildError(f"{versioned} not found: build with Debian's python3 (--python /usr/bin/python3)")
    return versioned, version


# --- config: set a key in an example TOML, keeping its comments -----------------------------------

_HEADER = re.compile(r"^\s*\[+[^\]]+\]+\s*(#.*)?$")


def set_key(text: str, table: str, key: str, value: str) -> str:
    """`key = value` in [table]: the active or commented-out line that names the key is rewritten
    (its trailing comment kept), else the line is added below the header. Checked by parsing."""
    lines = text.splitlines(keepends=True)
    header = re.compile(rf"^\s*\[{re.escape(table)}\]\s*(#.*)?$")
    starts = [i for i, line in enumerate(lines) if header.match(line)]
    if len(starts) != 1:
        raise BuildError(f"[{table}]: {len(starts)} such tables")
    start = starts[0]
    end = next((i for i in range(start + 1, len(lines)) if _HEADER.match(lines[i])), len(lines))
    pattern = re.compile(rf'^(\s*)#?\s*{re.escape(key)}\s*=\s*("[^"]*"|[^\s#]+)(\s*#.*)?$')
    hits = [i for i in range(start + 1, end) if pattern.match(lines[i].rstrip("\n"))]
    if hits:
        i = hits[0]
        m = pattern.match(lines[i].rstrip("\n"))
        lines[i] = f"{m.group(1)}{key} = {value}{m.group(3) or ''}\n"
    else:
        lines.insert(start + 1, f"{key} = {value}\n")
    out = "".join(lines)
    want = tomllib.loads(f"v = {value}")["v"]
    if tomllib.loads(out).get(table, {}).get(key) != want:
        raise BuildError(f"{table}.{key}: could not be set to {value}")
    return out


def render_conffile(conf: Conffile) -> str:
    text = (REPO / conf.source).read_text()
    if conf.settings:
        for table, key, value in conf.settings:
            text = set_key(text, table, key, value)
        note = (f"# Installed by the package from {conf.source}, with "
                + ", ".join(f"{t}.{k}" for t, k, _ in conf.settings) + " set for this layout.\n")
        text = note + text
    return text


# --- the virtualenv ------------------------------------------------------------------------------

def project_wheel(work: Path, venv_python: Path) -> Path:
    """A wheel of this tree, built from a copy (the working tree gets no build/ or egg-info)."""
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for pkg in PROJECT_PACKAGES:
        shutil.copytree(REPO / pkg, src / pkg, ignore=ignore)
    wheels = work / "wheels"
    run([str(venv_python), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(src)])
    found = sorted(wheels.glob("opencdn-*.whl"))
    if len(found) != 1:
        raise BuildError(f"expected one opencdn wheel, found {found}")
    return found[0]


def build_venv(work: Path, python: Path) -> Path:
    venv = work / "venv"
    run([str(python), "-m", "venv", str(venv)])
    vpy = venv / "bin/python"
    wheel = project_wheel(work, vpy)
    run([str(vpy), "-m", "pip", "install", "-q", "--no-compile", "--no-warn-script-location",
         "-c", str(REPO / "constraints.txt"), str(wheel)])
    run([str(vpy), "-m", "pip", "check"])
    run([str(vpy), "-m", "pip", "uninstall", "-q", "-y", "pip", "setuptools"])
    for direct_url in venv.glob("lib/python*/site-packages/opencdn-*.dist-info/direct_url.json"):
        direct_url.unlink()  # names the scratch wheel; the version says what this is
    for junk in list(venv.rglob("__pycache__")):
        shutil.rmtree(junk)
    for empty in sorted(venv.glob("include/**"), reverse=True):  # headers: none, and none needed
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()
    strip_objects(venv)
    return venv


def relocate(venv: Path, old: str, new: str) -> None:
    """Make a venv copied from `old` work at `new`: shebangs, activate scripts, pyvenv.cfg."""
    for path in sorted((venv / "bin").iterdir()):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old.encode() not in data:
            continue
        text = data.decode()
        # pip writes `#!/bin/sh` + `'''exec' PY "$0" "$@"` for interpreter paths too long for a shebang.
        text = re.sub(r"\A#!/bin/sh\n'''exec' \S+ \"\$0\" \"\$@\"\n' '''\n", f"#!{old}/bin/python\n", text)
        path.write_text(text.replace(old, new))
    cfg = venv / "pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace(old, new))
    leftovers = [str(p) for p in venv.rglob("*") if p.is_file() and not p.is_symlink()
                 and old.encode() in p.read_bytes()]
    if leftovers:
        raise BuildError(f"still naming the build path {old}: {leftovers[:10]}")


def strip_objects(venv: Path) -> int:
    """Debug symbols out of the wheels' shared objects, as dh_strip does (a third of the size)."""
    objects = [p for p in venv.rglob("*.so*") if p.is_file() and not p.is_symlink()
               and p.read_bytes()[:4] == b"\x7fELF"]
    if objects:
        run(["strip", "--strip-unneeded", "--remove-section=.comment", "--remove-section=.note",
             *map(str, objects)])
    return len(objects)


def compile_bytecode(root: Path, venv_path: str, version: str, python: Path) -> None:
    site = root / venv_path.lstrip("/") / f"lib/python{version}/site-packages"
    run([str(python), "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
         "-s", str(root), "-p", "/", str(site)])


_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def glibc_floor(venv: Path) -> str | None:
    """The glibc the binary wheels need: per wheel the oldest glibc among its manylinux tags (any of
    them will do), across wheels the newest of those."""
    floor: tuple[int, int] | None = None
    for wheel_file in venv.glob("lib/python*/site-packages/*.dist-info/WHEEL"):
        needs = []
        for tag in re.findall(r"^Tag: \S+-\S+-(\S+)$", wheel_file.read_text(), re.M):
            m = re.match(r"manylinux_(\d+)_(\d+)_", tag)
            legacy = tag.split("_", 1)[0]
            if m:
                needs.append((int(m.group(1)), int(m.group(2))))
            elif legacy in _LEGACY_MANYLINUX:
                needs.append(_LEGACY_MANYLINUX[legacy])
        if needs and (floor is None or min(needs) > floor):
            floor = min(needs)
    return f"{floor[0]}.{floor[1]}" if floor else None


# --- units, maintainer scripts, control ----------------------------------------------------------

def unit_dir() -> str:
    """Where this release's systemd ships units (/lib before Debian 13, /usr/lib from it)."""
    owned = subprocess.run(["dpkg-query", "-L", "systemd"], capture_output=True, text=True).stdout
    return "lib/systemd/system" if "\n/lib/systemd/system/" in "\n" + owned else "usr/lib/systemd/system"


def units_for(pkg: Package) -> list[Path]:
    units = sorted((REPO / "systemd").glob("*.service")) + sorted((REPO / "systemd").glob("*.timer"))
    mine = [u for u in units if u.name.startswith("oca")] if pkg.unit_filter == "oca" else \
        [u for u in units if not u.name.startswith("oca")]
    if not mine:
        raise BuildError(f"{pkg.name}: no units in systemd/")
    return mine


def render_unit(pkg: Package, unit: Path) -> str:
    text = unit.read_text()
    text = text.replace("/opt/opencdn/.venv/bin/", f"{pkg.venv}/bin/")
    text = text.replace("Documentation=file:///opt/opencdn/README.md",
                        f"Documentation=file:///usr/share/doc/{pkg.name}/README.md")
    if pkg.user_units and "DynamicUser=yes" in text:
        text = text.replace("DynamicUser=yes", f"User={pkg.user}\nGroup={pkg.user}")
    if "/opt/opencdn/.venv" in text:
        raise BuildError(f"{unit.name}: still names /opt/opencdn/.venv")
    return text


def sysctl_path(pkg: Package) -> str:
    """Where the package's kernel settings go: /usr/lib, package-owned (not a conffile); an admin
    overrides them with a file of the same name in /etc/sysctl.d."""
    return f"/usr/lib/sysctl.d/60-{pkg.name}.conf"


def state_dirs(pkg: Package, rendered: dict[str, str]) -> list[str]:
    dirs = set(pkg.dirs)
    for text in rendered.values():
        for kind, base in (("StateDirectory", "/var/lib"), ("LogsDirectory", "/var/log")):
            for m in re.finditer(rf"^{kind}=(.+)$", text, re.M):
                dirs.update(f"{base}/{d}" for d in m.group(1).split())
    return sorted(dirs)


def render_script(pkg: Package, name: str, units: list[str], dirs: list[str]) -> str:
    services = [u for u in units if u.endswith(".service")]
    timers = [u for u in units if u.endswith(".timer")]
    subst = {
        "@PKG@": pkg.name, "@USER@": pkg.user, "@HOME@": pkg.home, "@DIRS@": " ".join(pkg.dirs),
        "@VENV@": pkg.venv, "@SERVICES@": " ".join(services), "@TIMERS@": " ".join(timers),
        "@UNITS@": " ".join(timers + services), "@STATE_DIRS@": " ".join(dirs),
        "@SECRETS@": " ".join(pkg.secrets),
        "@SYSCTL@": sysctl_path(pkg) if pkg.sysctl else "",
        "@CONFDIRS@": " ".join(sorted({str(Path(c.dest).parent) for c in pkg.conffiles
                                       if not c.dest.startswith("/etc/logrotate.d")})),
        "@UNIT_NAMES_FIND@": " -o ".join(f"-name {u}" for u in units),
    }
    text = (HERE / "maintscripts" / name).read_text()
    for k, v in subst.items():
        text = text.replace(k, v)
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise BuildError(f"{pkg.name}/{name}: unknown placeholders {leftover}")
    return text


def installed_size_kib(root: Path) -> int:
    total = 0
    for p in root.rglob("*"):
        if p.is_relative_to(root / "DEBIAN"):
            continue
        total += 1 if (p.is_dir() or p.is_symlink()) else -(-p.stat().st_size // 1024)
    return total


def control_file(pkg: Package, version: str, arch: str, python_version: str, glibc: str | None,
                 size_kib: int) -> str:
    # python3 too: some bundled third-party files (exabgp's examples) are `#!/usr/bin/env python3` scripts.
    depends = [f"python{python_version}", "python3"] + ([f"libc6 (>= {glibc})"] if glibc else []) + list(pkg.depends)
    lines = [
        f"Package: {pkg.name}", f"Version: {version}", f"Architecture: {arch}",
        f"Maintainer: {MAINTAINER}", f"Installed-Size: {size_kib}",
        f"Depends: {', '.join(depends)}",
    ]
    if pkg.recommends:
        lines.append(f"Recommends: {', '.join(pkg.recommends)}")
    lines += ["Section: net", "Priority: optional", f"Description: {pkg.summary}"]
    body = pkg.description.splitlines()
    if any(len(line) > 79 for line in body):
        raise BuildError(f"{pkg.name}: description lines must fit in 80 columns")
    lines += [f" {line}" if line.strip() else " ." for line in body]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    path.chmod(mode)


def docs(pkg: Package, root: Path, version: str) -> None:
    doc = root / f"usr/share/doc/{pkg.name}"
    write(doc / "copyright", (HERE / "docs/copyright").read_text())
    changelog = (f"{pkg.name} ({version}) unstable; urgency=medium\n\n"
                 f"  * Built from the opencdn repository (packaging/build.py).\n\n"
                 f" -- {MAINTAINER}  {formatdate(float(os.environ.get('SOURCE_DATE_EPOCH', time.time())))}\n")
    write(doc / "changelog.gz", gzip.compress(changelog.encode(), mtime=0))
    write(doc / "README.md", (REPO / "README.md").read_text())
    overrides = (HERE / "lintian-overrides").read_text().replace("@PKG@", pkg.name)
    write(root / f"usr/share/lintian/overrides/{pkg.name}", overrides)
    write(doc / "README.Debian", (HERE / "docs" / f"{pkg.name}.README.Debian").read_text())
    for conf in pkg.conffiles:
        if conf.source.startswith("config/"):
            write(doc / "examples" / Path(conf.source).name, (REPO / conf.source).read_text())


def md5sums(root: Path) -> str:
    lines = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and not p.is_relative_to(root / "DEBIAN"):
            lines.append(f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(root)}")
    return "\n".join(lines) + "\n"


def normalise_modes(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_symlink():
            continue
        if p.is_dir():
            p.chmod(0o755)
        else:
            p.chmod(0o755 if p.stat().st_mode & 0o111 else 0o644)


def assemble(pkg: Package, venv: Path, stage: Path, version: str, arch: str, python: Path,
             python_version: str, glibc: str | None) -> Path:
    root = stage / pkg.name
    target = root / pkg.venv.lstrip("/")
    target.parent.mkdir(parents=True)
    shutil.copytree(venv, target, symlinks=True)
    relocate(target, str(venv), pkg.venv)
    compile_bytecode(root, pkg.venv, python_version, python)
    for command in pkg.commands:
        if not (target / "bin" / command).is_file():
            raise BuildError(f"{pkg.name}: no entry point bin/{command}")
        link = root / "usr/bin" / command
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"{pkg.venv}/bin/{command}")
    rendered = {u.name: render_unit(pkg, u) for u in units_for(pkg)}
    udir = unit_dir()
    for name, text in rendered.items():
        write(root / udir / name, text)
    for conf in pkg.conffiles:
        write(root / conf.dest.lstrip("/"), render_conffile(conf))
    if pkg.sysctl:
        write(root / sysctl_path(pkg).lstrip("/"), (HERE / "sysctl" / f"{pkg.sysctl}.conf").read_text())
    docs(pkg, root, version)
    normalise_modes(root)
    dirs = state_dirs(pkg, rendered)
    debian = root / "DEBIAN"
    debian.mkdir()
    for script in ("postinst", "prerm", "postrm"):
        write(debian / script, render_script(pkg, script, list(rendered), dirs), 0o755)
    write(debian / "conffiles", "".join(f"{c.dest}\n" for c in pkg.conffiles))
    write(debian / "md5sums", md5sums(root))
    write(debian / "control", control_file(pkg, version, arch, python_version, glibc,
                                           installed_size_kib(root)))
    return root


def build_deb(root: Path, out: Path, name: str, version: str, arch: str, compression: str) -> Path:
    deb = out / f"{name}_{version}_{arch}.deb"
    algo, _, level = compression.partition(":")
    cmd = ["dpkg-deb", "--root-owner-group", f"-Z{algo}"] + ([f"-z{level}"] if level else [])
    run(cmd + ["--build", str(root), str(deb)])
    return deb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="build-packages", description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, default=REPO / "dist", help="where the .deb files go (default dist/)")
    ap.add_argument("--python", default="/usr/bin/python3", help="Debian's interpreter (default /usr/bin/python3)")
    ap.add_argument("--version", default=None, help="package version (default: pyproject's)")
    ap.add_argument("--only", choices=sorted(packages()), action="append", help="build only this package")
    ap.add_argument("--compression", default="xz", help="dpkg-deb compressor[:level], e.g. xz, gzip:1 (default xz)")
    ap.add_argument("--keep-work", action="store_true", help="keep the scratch directory (printed)")
    args = ap.parse_args(argv)
    started = time.monotonic()
    try:
        version = args.version or project_version()
        arch = deb_arch()
        python, python_version = interpreter(args.python)
        chosen = [p for name, p in packages().items() if not args.only or name in args.only]
        args.out.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="opencdn-deb-"))
        try:
            log(f"venv with {python} from constraints.txt")
            venv = build_venv(work, python)
            glibc = glibc_floor(venv)
            for pkg in chosen:
                root = assemble(pkg, venv, work / "stage", version, arch, python, python_version, glibc)
                deb = build_deb(root, args.out.resolve(), pkg.name, version, arch, args.compression)
                print(deb)
        finally:
            if args.keep_work:
                log(f"scratch kept in {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    except BuildError as exc:
        log(f"error: {exc}")
        return 1
    log(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
