"""`origin serve` refuses the files of a withdrawn title or version (410), and its catalog entry (gone
from the list too), once its `withdrawals` task has read the control store's log, and serves them again
after an undo: an appliance with a stale manifest or a pull-through miss cannot bring a withdrawn
title back from the origin. A real subprocess over a local origin and a local control store."""
from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
import requests
from origin_testkit import OriginProcess

from contracts.catalog import catalog_key, encode
from contracts.keys import load_keyring, write_new_keyfile
from contracts.token import fill_keys, fill_token
from contracts.withdrawals import encode_event, new_event
from tests.fill.fill_helpers import title_entry
from tests.support.prom import value

ENTRIES = {t: title_entry(t, {f"{t}.mp4": t.encode() * 500}) for t in ("t1", "t2", "t3")}
FILES = {key: data for _, objects in ENTRIES.values() for key, data in objects.items()}
OTHER_VERSION = "v" + "0" * 16  # not t3's: withdrawing it leaves t3's files alone


@pytest.fixture()
def origin(tmp_path: Path):
    media, control = tmp_path / "media", tmp_path / "control"
    catalog = {str(catalog_key(t)): encode(entry) for t, (entry, _) in ENTRIES.items()}
    for key, data in {**FILES, **catalog}.items():
        (media / key).parent.mkdir(parents=True, exist_ok=True)
        (media / key).write_bytes(data)
    control.mkdir()
    write_new_keyfile(tmp_path / "keys.toml")
    conf = tmp_path / "origin.toml"
    conf.write_text(f'[origin]\nlocation = "{media}"\n\n[serve]\nport = 0\nkey_file = "keys.toml"\n'
                    f'control_store = "{control}"\nwithdrawals_poll_s = 1\n')
    proc = OriginProcess(conf)
    token = fill_token(fill_keys(load_keyring(tmp_path / "keys.toml"), "ams-1"), int(time.time()) + 3600, "ams-1")
    yield proc, control, {"Authorization": f"CDN-Token {token}"}
    proc.stop()


def record(control: Path, action: str, title: str, version: str | None = None) -> None:
    event = new_event(action, title, version, "rights ended", "operator", time.time(), secrets.token_hex(8))
    (control / event.key).parent.mkdir(exist_ok=True)
    (control / event.key).write_bytes(encode_event(event))


def statuses(proc: OriginProcess, auth: dict[str, str]) -> dict[str, int]:
    return {key: requests.get(f"{proc.url}/{key}", headers=auth, timeout=5).status_code for key in FILES}


def wait_for(proc: OriginProcess, auth: dict[str, str], want: dict[str, int], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := statuses(proc, auth)) != want:
        assert time.monotonic() < deadline, got
        time.sleep(0.2)


def titles(proc: OriginProcess, auth: dict[str, str]) -> list[str]:
    return [t["id"] for t in requests.get(f"{proc.url}/v1/titles", headers=auth, timeout=5).json()["titles"]]


def test_withdrawn_files_are_refused_until_undone(origin) -> None:
    proc, control, auth = origin
    a, b, c = FILES
    t2 = ENTRIES["t2"][0]
    assert statuses(proc, auth) == {a: 200, b: 200, c: 200} and titles(proc, auth) == ["t1", "t2", "t3"]
    record(control, "withdraw", "t1")
    record(control, "withdraw", "t2", t2.version)  # that version
    record(control, "withdraw", "t3", OTHER_VERSION)  # another version than the one held
    wait_for(proc, auth, {a: 410, b: 410, c: 200})
    assert titles(proc, auth) == ["t3"]
    gone = requests.get(f"{proc.url}/v1/titles/t2", headers=auth, timeout=5)
    assert gone.status_code == 410 and "withdrawn" in gone.json()["error"]
    (control / "withdrawals/garbage.json").write_bytes(b"{")  # skipped and reported; the rest still holds
    record(control, "undo", "t1")
    wait_for(proc, auth, {a: 200, b: 410, c: 200})
    assert titles(proc, auth) == ["t1", "t3"]
    assert requests.get(f"{proc.url}/{a}", timeout=5).status_code in (401, 403)  # a token still comes first
    metrics = requests.get(f"{proc.url}/metrics", timeout=5).text
    assert value(metrics, "origin_responses_total", route="file", status="410") >= 2
    events = proc.events()
    assert any(e.get("event") == "withdrawals" and e.get("withdrawn") == [f"t2/{t2.version}", f"t3/{OTHER_VERSION}"]
               for e in events)
    assert any(e.get("event") == "withdrawal-event-rejected" and "garbage" in e.get("key", "") for e in events)
