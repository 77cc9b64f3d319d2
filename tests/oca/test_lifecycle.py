"""The appliance as an operator sees it: files appearing while it runs, key rotation, graceful drain,
dying disks, tier moves under a response in flight, config errors."""
from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from contracts.keys import new_secret

BIG = os.urandom(24 * 1024 * 1024)  # more than the kernel buffers between us and the server


def _status(app, target, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        conn.request("GET", target, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, body
    finally:
        conn.close()


def _slow_reader(app, key):
    """A connection that asked for a big file and reads it slowly (small receive buffer)."""
    sock = socket.create_connection(("127.0.0.1", app.port), timeout=20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # tiny buffers crawl on loopback
    sock.sendall(b"GET " + app.path_and_query(key).encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    first = sock.recv(4096)
    assert first.startswith(b"HTTP/1.1 200 ")
    return sock, first


def _read_rest(sock, first, total_body):
    head, _, body = first.partition(b"\r\n\r\n")
    chunks = [body]
    got = len(body)
    while got < total_body:
        data = sock.recv(1 << 20)
        if not data:
            break
        chunks.append(data)
        got += len(data)
    return head, b"".join(chunks)


def test_put_while_running_is_served_soon(make_appliance):
    app = make_appliance()
    assert _status(app, app.path_and_query("late/file.mp4"))[0] == 404
    app.put(b"hello", "late/file.mp4")
    app.wait_for(lambda: _status(app, app.path_and_query("late/file.mp4")) == (200, b"hello"), what="new file")


def test_key_rotation_without_restart(make_appliance):
    app = make_appliance()
    app.put(b"x" * 100, "k/file.mp4")
    old_keys = app.root / "old-keys.toml"
    shutil.copy(app.root / "keys.toml", old_keys)
    old_secret_line = (app.root / "keys.toml").read_text().splitlines()[-1]
    (app.root / "keys.toml").write_text(f'signing = "k2"\n[keys]\n{old_secret_line}\nk2 = "{new_secret()}"\n')
    app.proc.send_signal(signal.SIGHUP)
    app.wait_for(lambda: _status(app, app.path_and_query("k/file.mp4"))[0] == 200, what="k2 accepted")
    assert _status(app, app.path_and_query("k/file.mp4", keyfile=old_keys))[0] == 200  # k1 still listed
    (app.root / "keys.toml").write_text(f'signing = "k2"\n[keys]\n{app.root.joinpath("keys.toml").read_text().splitlines()[-1]}\n')
    app.proc.send_signal(signal.SIGHUP)
    app.wait_for(lambda: _status(app, app.path_and_query("k/file.mp4", keyfile=old_keys))[0] == 403,
                 what="k1 retired")


def test_sigterm_drains_responses_in_flight(make_appliance):
    app = make_appliance()
    app.put(BIG, "big/file.mp4")
    app.wait_for(lambda: _status(app, app.path_and_query("big/file.mp4"), {"Range": "bytes=0-0"})[0] == 206,
                 what="file")
    sock, first = _slow_reader(app, "big/file.mp4")
    app.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(ConnectionRefusedError):  # no new connections once draining
        socket.create_connection(("127.0.0.1", app.port), timeout=2)
    head, body = _read_rest(sock, first, len(BIG))
    sock.close()
    assert len(body) == len(BIG) and body == BIG and b"Connection: close" not in head  # the response in flight finished whole
    assert app.proc.wait(20) == 0


def test_vanished_disk_fails_alone(make_appliance):
    app = make_appliance()
    app.put(b"s" * 1000, "on/ssd.mp4", "ssd")
    app.put(b"h" * 1000, "on/hdd.mp4", "hdd")
    app.wait_for(lambda: _status(app, app.path_and_query("on/hdd.mp4"))[0] == 200, what="files")
    import threading

    stop, ssd_statuses, ssd_target = threading.Event(), [], app.path_and_query("on/ssd.mp4")

    def load() -> None:  # clients keep fetching from the other disk all along
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            ssd_statuses.append(_status(app, ssd_target))

    loader = threading.Thread(target=load)
    loader.start()
    try:
        shutil.move(app.hdd, app.root / "hdd0-pulled")  # the disk disappears
        app.wait_for(lambda: _status(app, app.path_and_query("on/hdd.mp4"))[0] in (404, 503), what="hdd refused")
    finally:
        stop.set()
        loader.join()
    assert len(ssd_statuses) > 10 and set(ssd_statuses) == {(200, b"s" * 1000)}
    app.wait_for(lambda: not next(d for d in app.health()["disks"] if d["tier"] == "hdd")["ok"],
                 what="hdd reported failed")
    assert _status(app, app.path_and_query("on/hdd.mp4"))[0] == 404  # out of the index: a fast miss
    metrics = app.admin("/metrics").decode()
    assert f'oca_disk_up{{disk="{app.hdd}",tier="hdd"}} 0' in metrics


def test_read_error_mid_response_fails_the_disk(make_appliance):
    """A file cut shorter than its index entry is what a dying disk looks like to sendfile (it
    returns 0 bytes early); the connection is cut and the disk failed, the other disk serves."""
    app = make_appliance()
    app.put(BIG, "cut/file.mp4", "hdd")
    app.put(b"ok", "cut/other.mp4", "ssd")
    app.wait_for(lambda: _status(app, app.path_and_query("cut/other.mp4"))[0] == 200, what="files")
    with open(app.hdd / "cut" / "file.mp4", "r+b") as fh:
        fh.truncate(1024)
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    conn.request("GET", app.path_and_query("cut/file.mp4"))
    resp = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()
    app.wait_for(lambda: not next(d for d in app.health()["disks"] if d["tier"] == "hdd")["ok"]
                 or _status(app, app.path_and_query("cut/file.mp4"))[0] == 404, what="disk failed")
    assert _status(app, app.path_and_query("cut/other.mp4")) == (200, b"ok")
    assert app.metric("oca_disk_errors_total") >= 1


def test_move_between_tiers_keeps_response_in_flight(make_appliance):
    app = make_appliance()
    app.put(BIG, "move/file.mp4", "hdd")
    app.wait_for(lambda: _status(app, app.path_and_query("move/file.mp4"), {"Range": "bytes=0-0"})[0] == 206,
                 what="file")
    sock, first = _slow_reader(app, "move/file.mp4")
    from oca import config as oca_config
    from oca.config import Tier
    from oca.store.store import Store

    store = Store.open(oca_config.load(app.config_path))
    try:
        moved = store.move("move/file.mp4", Tier.SSD)
    finally:
        store.close()
    assert moved.tier is Tier.SSD and not (app.hdd / "move" / "file.mp4").exists()
    _, body = _read_rest(sock, first, len(BIG))
    sock.close()
    assert body == BIG

    def served_from_ssd() -> bool:
        assert _status(app, app.path_and_query("move/file.mp4"), {"Range": "bytes=0-9"}) == (206, BIG[:10])
        return 'oca_bytes_sent_total{tier="ssd"} 0' not in app.admin("/metrics").decode()

    app.wait_for(served_from_ssd, what="served from ssd")


def test_check_config_names_the_bad_key(make_appliance):
    app = make_appliance(start=False)
    ok = app.cli("check-config")
    assert ok.returncode == 0 and "ok" in ok.stdout
    app.config_path.write_text(app.config_path.read_text().replace('path = "hdd0"', "path = 5"))
    bad = app.cli("check-config", check=False)
    assert bad.returncode == 2 and "tiers.hdd[0].path" in bad.stderr
    app.config_path.write_text(app.config_path.read_text().replace("[mover]", "[mover]\nspeed = 3"))
    bad = app.cli("check-config", check=False)
    assert "mover.speed: unknown setting" in bad.stderr or "tiers.hdd[0].path" in bad.stderr


def test_dev_mode_first_try(tmp_path):
    media = tmp_path / "media"
    (media / "show").mkdir(parents=True)
    (media / "show" / "ep1.mp4").write_bytes(b"v" * 5000)
    from tests.oca.conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "oca.cli", "serve", "--dev", str(media), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (media / ".oca" / "dev.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        url = subprocess.run([sys.executable, "-m", "oca.cli", "url", "--dev", str(media), "show/ep1.mp4"],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert url.startswith(f"http://127.0.0.1:{port}/show/ep1.mp4?")
        import urllib.request

        req = urllib.request.Request(url, headers={"Range": "bytes=10-19"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 206 and resp.read() == b"v" * 10
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_pull_through_from_a_parent_appliance(make_appliance):
    """Off by default (a miss is a fast 404); on, a child fetches the file from its parent with a
    fill token, publishes it atomically and serves it; fill tokens are what the parent accepts."""
    parent = make_appliance()
    data = os.urandom(300_000)
    parent.put(data, "pt/file.mp4")
    parent.wait_for(lambda: _status(parent, parent.path_and_query("pt/file.mp4"))[0] == 200, what="parent")
    child = make_appliance(start=False)
    # The child holds its own keys plus its fill keys for the parent (what `steering keys derive
    # --pull-from` writes): valid at the parent, for the child only.
    from contracts.keys import keyfile_text, load_keyring
    from contracts.token import fill_keys

    pull_keys = fill_keys(load_keyring(parent.root / "keys.toml"), "test-oca")
    (child.root / "pull-keys.toml").write_text(keyfile_text(pull_keys, "fill:test-oca@parent"))
    child.config_path.write_text(child.config_path.read_text() + (
        f'\n[pull_through]\nenabled = true\nparent = "http://127.0.0.1:{parent.port}"\nwait_s = 5.0\n'
        'key_file = "pull-keys.toml"\n'))
    child.start()
    status, body = _status(child, child.path_and_query("pt/file.mp4"), {"Range": "bytes=100-199"})
    assert (status, body) == (206, data[100:200])
    assert any(e["key"] == "pt/file.mp4" for e in child.log_events("pulled"))
    stored = [d / "pt" / "file.mp4" for d in (child.ssd, child.hdd) if (d / "pt" / "file.mp4").exists()]
    assert len(stored) == 1 and stored[0].read_bytes() == data
    # A file the parent lacks: a fast 404, and no second attempt inside the penalty window.
    assert _status(child, child.path_and_query("pt/none.mp4"))[0] == 404
    assert _status(child, child.path_and_query("pt/none.mp4"))[0] == 404
    assert len(child.log_events("pull-failed")) == 1


def test_fill_token_in_authorization_header(make_appliance):
    from contracts.keys import load_keyring
    from contracts.token import fill_authorization, fill_keys

    app = make_appliance()
    app.put(b"peer", "peer/file.mp4")
    app.wait_for(lambda: _status(app, app.path_and_query("peer/file.mp4"))[0] == 200, what="file")
    keys = fill_keys(load_keyring(app.root / "keys.toml"), "ams-2")  # what the planner hands ams-2 for us
    good = fill_authorization(keys, int(time.time()) + 60, "ams-2")
    assert _status(app, "/peer/file.mp4", {"Authorization": good}) == (200, b"peer")
    assert _status(app, "/peer/file.mp4", {"Authorization": good[:-2] + "xx"})[0] == 403
    assert _status(app, "/peer/file.mp4", {"Authorization": good.replace("f=ams-2", "f=ams-3")})[0] == 403
    expired = fill_authorization(keys, int(time.time()) - 5, "ams-2")
    assert _status(app, "/peer/file.mp4", {"Authorization": expired})[0] == 403
    plain = fill_authorization(load_keyring(app.root / "keys.toml"), int(time.time()) + 60, "ams-2")
    assert _status(app, "/peer/file.mp4", {"Authorization": plain})[0] == 403  # not derived for the fetcher
    assert _status(app, "/peer/file.mp4", {"Authorization": "Basic dXNlcjpwYXNz"})[0] == 403


def test_scrub_drops_a_file_whose_bytes_rotted(make_appliance):
    app = make_appliance(start=False)
    app.config_path.write_text(app.config_path.read_text().replace(
        "disk_check_interval_s = 0.5", "disk_check_interval_s = 0.5\nscrub_rate_bps = 500000000\nscrub_pause_s = 0.2"))
    app.start()
    data = os.urandom(2_000_000)
    app.put(data, "rot/file.mp4", "hdd")
    app.put(b"fine" * 1000, "rot/fine.mp4", "ssd")
    app.wait_for(lambda: _status(app, app.path_and_query("rot/file.mp4"))[0] == 200, what="file")
    with open(app.hdd / "rot" / "file.mp4", "r+b") as fh:  # same size, one byte flipped
        fh.seek(1_000_000)
        fh.write(bytes([data[1_000_000] ^ 0xFF]))
    app.wait_for(lambda: app.metric("oca_scrub_corrupt_files") >= 1, timeout=20, what="scrub verdict")
    app.wait_for(lambda: _status(app, app.path_and_query("rot/file.mp4"))[0] == 404, what="never served again")
    assert not (app.hdd / "rot" / "file.mp4").exists()
    assert _status(app, app.path_and_query("rot/fine.mp4")) == (200, b"fine" * 1000)
    assert any(e.get("key") == "rot/file.mp4" for e in app.log_events("corrupt-file-dropped"))


def test_disk_turning_read_only_under_load_fails_alone(make_appliance):
    """A disk remounted read-only (a real bind mount) while clients keep fetching: its files are
    dropped and reported, the other disk serves every request throughout."""
    import threading

    app = make_appliance()
    app.put(b"s" * 50_000, "ro/ssd.mp4", "ssd")
    app.put(b"h" * 50_000, "ro/hdd.mp4", "hdd")
    app.wait_for(lambda: _status(app, app.path_and_query("ro/hdd.mp4"))[0] == 200, what="files")
    ssd_target = app.path_and_query("ro/ssd.mp4")
    stop, ssd_statuses = threading.Event(), []

    def load() -> None:
        deadline = time.monotonic() + 30  # bounded even if the test fails early
        while not stop.is_set() and time.monotonic() < deadline:
            ssd_statuses.append(_status(app, ssd_target, {"Range": "bytes=0-999"})[0])

    loader = threading.Thread(target=load)
    loader.start()
    subprocess.run(["mount", "--bind", str(app.hdd), str(app.hdd)], check=True, capture_output=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(app.hdd)], check=True, capture_output=True)
        app.wait_for(lambda: not next(d for d in app.health()["disks"] if d["tier"] == "hdd")["ok"],
                     timeout=15, what="hdd reported failed")
        app.wait_for(lambda: _status(app, app.path_and_query("ro/hdd.mp4"))[0] == 404, what="hdd files dropped")
    finally:
        stop.set()
        loader.join()
        subprocess.run(["umount", "-l", str(app.hdd)], capture_output=True)
    assert len(ssd_statuses) > 20 and set(ssd_statuses) == {206}


def test_maintenance_drain_is_durable_serves_on_and_needs_the_admin_token(make_appliance):
    """`oca drain --reason` through the admin API: health says draining (and why), the data port still
    serves URLs handed out, the flag survives a restart, anonymous POSTs get 401, `oca undrain` ends it."""
    import json
    import urllib.error
    import urllib.request

    app = make_appliance()
    app.put(b"still here", "keep/file.mp4")
    url_before = app.path_and_query("keep/file.mp4")
    app.wait_for(lambda: _status(app, url_before) == (200, b"still here"), what="the file served")
    assert app.health()["draining"] is False and app.health()["drain"]["draining"] is False
    admin = ("--admin", f"http://127.0.0.1:{app.admin_port}")  # the test's config lets it pick a port
    out = app.cli("drain", "--reason", "disk swap at 14:00 (ticket OPS-42)", *admin)
    assert json.loads(out.stdout)["reason"] == "disk swap at 14:00 (ticket OPS-42)"
    health = app.health()
    assert health["draining"] is True and health["status"] == "draining" and health["accepting"] is True
    assert health["drain"]["reason"] == "disk swap at 14:00 (ticket OPS-42)" and health["drain"]["since"] > 0
    assert app.metric("oca_draining") == 1
    assert _status(app, url_before) == (200, b"still here")  # the data port serves on
    # the state file makes it durable: a restart comes back drained, with its reason and time
    app.stop()
    app.start()
    health = app.health()
    assert health["draining"] is True and health["drain"]["reason"] == "disk swap at 14:00 (ticket OPS-42)"
    assert [e["reason"] for e in app.log_events("drained-at-start")] == ["disk swap at 14:00 (ticket OPS-42)"]
    assert _status(app, url_before) == (200, b"still here")
    # nobody without the admin token; no reason a heartbeat could not carry
    for path, body in (("/v1/drain", b'{"reason": "x"}'), ("/v1/undrain", b"{}")):
        req = urllib.request.Request(f"http://127.0.0.1:{app.admin_port}{path}", data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 401
    admin = ("--admin", f"http://127.0.0.1:{app.admin_port}")
    bad = app.cli("drain", "--reason", "line one\nline two", *admin, check=False)
    assert bad.returncode == 2 and "HTTP 400" in bad.stderr
    assert app.health()["drain"]["reason"] == "disk swap at 14:00 (ticket OPS-42)"
    out = app.cli("undrain", *admin)
    assert json.loads(out.stdout)["draining"] is False
    assert app.health()["draining"] is False and app.health()["status"] != "draining"
    app.stop()
    app.start()
    assert app.health()["draining"] is False
