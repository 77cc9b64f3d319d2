"""The agent's manifest fetch from steering replicas (`from_steering`), against real servers: a replica
that has not planned yet (a real steering replica without a fill origin answers 404) must not hide
another replica's manifest; when none has one, the error says what each answered."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from fill_helpers import SteeringStandIn, ThreadServer, write_keyfile

from contracts.keys import derive_keyring, load_keyring
from contracts.manifest import ManifestFile, Source, make_manifest
from oca.fill.manifest_client import ManifestRefused, NoManifest, from_steering
from tests.steering.steer_helpers import ServerThread, write_setup

APPLIANCE = "ams-1"
FILES = [ManifestFile("t1/v/1080p.mp4", 1000, "0123456789abcdef" * 2, "ssd", 0,
                      (Source("origin", url="http://o:8070/t1/v/1080p.mp4"),))]


def fetch(replicas: list[str], keys, saved: bytes | None = None):
    async def run():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            return await from_steering(session, tuple(replicas), APPLIANCE, saved, keys)
    return asyncio.run(run())


@pytest.fixture()
def master(tmp_path: Path) -> Path:
    """The fleet's master keys: the real replica's and the stand-in's (every replica has the same)."""
    (tmp_path / "steering").mkdir()
    return write_keyfile(tmp_path / "steering" / "keys.toml")


@pytest.fixture()
def unplanned(tmp_path: Path, master: Path):
    """A real steering replica that has no plan (no fill origin configured): 404 for every appliance."""
    with ServerThread(write_setup(tmp_path / "steering")) as replica:
        yield replica.url


def test_a_replica_without_a_plan_does_not_hide_anothers_manifest(unplanned: str, master: Path) -> None:
    manifest = make_manifest(APPLIANCE, FILES, time.time())
    planned = SteeringStandIn(master)
    planned.manifests[APPLIANCE] = manifest
    keys = derive_keyring(load_keyring(master), APPLIANCE)  # what ams-1 holds
    with ThreadServer(planned.app()) as other:
        raw, got, changed = fetch([unplanned, other.url], keys)
        assert changed and got.files == manifest.files and got.version == manifest.version
        assert set(got.credentials) == {"origin"} and got.signature
        # and the next run, holding it: a 304 from the replica that has it keeps it
        assert fetch([unplanned, other.url], keys, saved=raw)[1:] == (got, False)
        # a manifest another appliance's keys verify is not ours: refused, never used
        with pytest.raises(ManifestRefused):
            fetch([other.url], derive_keyring(load_keyring(master), "ams-2"))
    assert planned.statuses == [200, 304, 200]


def test_a_held_manifest_past_its_refresh_age_is_fetched_whole(master: Path) -> None:
    """Same files, same version (ETag), but the credentials in the held copy age: after
    REFRESH_AFTER_S the agent asks without If-None-Match and gets the plan's current credentials."""
    from oca.fill.manifest_client import REFRESH_AFTER_S

    planned = SteeringStandIn(master)
    keys = derive_keyring(load_keyring(master), APPLIANCE)
    with ThreadServer(planned.app()) as steering:
        planned.manifests[APPLIANCE] = make_manifest(APPLIANCE, FILES, time.time() - REFRESH_AFTER_S - 60)
        old_raw, _, _ = fetch([steering.url], keys)
        planned.manifests[APPLIANCE] = make_manifest(APPLIANCE, FILES, time.time())
        raw, got, changed = fetch([steering.url], keys, saved=old_raw)
        assert changed and raw != old_raw and time.time() - got.generated_at < 60
        assert fetch([steering.url], keys, saved=raw)[2] is False  # a recent one: 304 as before
    assert planned.statuses == [200, 200, 304]


def test_no_replica_with_a_manifest_is_a_clear_no_manifest(unplanned: str, master: Path) -> None:
    with ThreadServer(SteeringStandIn(master).app()) as other:
        with pytest.raises(NoManifest) as err:
            fetch([unplanned, other.url, "http://127.0.0.1:9"], derive_keyring(load_keyring(master), APPLIANCE))
    text = str(err.value)
    assert text.startswith(f"no steering replica has a fill manifest for {APPLIANCE}: ")
    assert f"{unplanned}/v1/fill-manifest: no fill plan yet (404)" in text
    assert f"{other.url}/v1/fill-manifest: no fill plan yet (404)" in text
    assert "http://127.0.0.1:9/v1/fill-manifest: ClientConnectorError" in text
