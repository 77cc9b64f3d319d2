"""The appliance-side reporter (oca.reporter) against real steering servers on 127.0.0.1: whole
inventory first, deltas after, a full resend after a gap or a failed round, every replica reported to."""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import aiohttp
import pytest

from contracts.keys import derive_keyring
from contracts.heartbeat import HealthSnapshot, Load
from oca.reporter import InventoryState, Reporter
from steer_helpers import ServerThread, free_port, write_setup
from tests.support.prom import samples


class FakeStore:
    """The two callables the appliance daemon supplies, over a plain set."""

    def __init__(self, keys: set[str]) -> None:
        self.keys, self.version, self.egress = set(keys), 1, 1000
        self.popularity: dict[str, tuple[float, float]] = {}

    def change(self, add: frozenset[str] = frozenset(), remove: frozenset[str] = frozenset()) -> None:
        self.keys = (self.keys | add) - remove
        self.version += 1

    def snapshot(self) -> HealthSnapshot:
        return HealthSnapshot(accepting=True, draining=False, load=Load(0.2, 5), egress_bps=self.egress,
                              capacity_bps=10 * 10**9, popularity=self.popularity)

    def inventory(self) -> InventoryState:
        return InventoryState(self.version, frozenset(self.keys))


def held(srv: ServerThread, appliance: str = "ams-1") -> set[str]:
    return srv.call(lambda: set(srv.replica.state.inventory.files_of(appliance)))


def verdicts(srv: ServerThread) -> dict[str, float]:
    def read() -> dict[str, float]:
        return {dict(labels)["verdict"]: v for (name, labels), v in samples(srv.replica.metrics.text()).items()
                if name == "steering_inventory_updates_total"}
    return srv.call(read)


async def rounds(reporter: Reporter, n: int, between=None) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for i in range(n):
            await reporter.report_once(session)
            if between is not None:
                between(i)


@pytest.fixture()
def srv(tmp_path: Path):
    with ServerThread(write_setup(tmp_path, health={"missed_reports": 100})) as server:
        yield server


def test_full_then_deltas(srv: ServerThread) -> None:
    store = FakeStore({"t/a.mp4", "t/b.mp4"})
    reporter = Reporter("ams-1", "ams", [srv.url], 0.1, store.snapshot, store.inventory, keys=derive_keyring(srv.keys, "ams-1"))

    def step(i: int) -> None:
        if i == 0:
            assert held(srv) == {"t/a.mp4", "t/b.mp4"}
            store.change(add={"t/c.mp4"}, remove={"t/a.mp4"})
        if i == 1:
            assert held(srv) == {"t/b.mp4", "t/c.mp4"}

    asyncio.run(rounds(reporter, 3, step))
    assert verdicts(srv) == {"replace": 1, "apply": 2}
    (status,) = reporter.status()
    assert (status.status, status.need_full, status.last_error) == ("up", False, None)
    assert srv.call(lambda: srv.replica.state.health["ams-1"].status.value) == "up"


def test_a_gap_forces_a_full_resend(srv: ServerThread) -> None:
    store = FakeStore({"t/a.mp4"})
    reporter = Reporter("ams-1", "ams", [srv.url], 0.1, store.snapshot, store.inventory, keys=derive_keyring(srv.keys, "ams-1"))

    def step(i: int) -> None:
        if i == 0:  # the replica loses this appliance's inventory (as a restarted replica would)
            srv.call(lambda: srv.replica.state.inventory.drop("ams-1"))
            store.change(add={"t/b.mp4"})
        if i == 1:
            assert reporter.status()[0].need_full and held(srv) == set()

    asyncio.run(rounds(reporter, 3, step))
    assert held(srv) == {"t/a.mp4", "t/b.mp4"}
    assert verdicts(srv) == {"replace": 2, "gap": 1}


def test_every_replica_gets_reports_and_a_late_one_gets_the_whole_set(tmp_path: Path, srv: ServerThread) -> None:
    port = free_port()
    late_url = f"http://127.0.0.1:{port}"
    store = FakeStore({"t/a.mp4"})
    reporter = Reporter("ams-1", "ams", [srv.url, late_url], 0.1, store.snapshot, store.inventory, timeout_s=2,
                        keys=derive_keyring(srv.keys, "ams-1"))
    asyncio.run(rounds(reporter, 2, lambda i: store.change(add={f"t/{i}.mp4"})))
    ok, down = reporter.status()
    assert ok.last_error is None and down.last_error is not None and down.failures == 2 and down.need_full
    (tmp_path / "late").mkdir()
    shutil.copy(srv.config_path.parent / "keys.toml", tmp_path / "late" / "keys.toml")  # one key ring everywhere
    with ServerThread(write_setup(tmp_path / "late", port=port, health={"missed_reports": 100})) as late:
        asyncio.run(rounds(reporter, 1))
        assert held(late) == held(srv) == {"t/a.mp4", "t/0.mp4", "t/1.mp4"}
        assert verdicts(late) == {"replace": 1}
    assert all(s.last_error is None for s in reporter.status())


def test_run_reports_every_interval_until_stopped(srv: ServerThread) -> None:
    store = FakeStore({"t/a.mp4"})
    store.popularity = {f"t/p{i}.mp4": (float(i), float(i)) for i in range(50)}
    reporter = Reporter("ams-1", "ams", [srv.url], 0.1, store.snapshot, store.inventory, max_popularity=10,
                        keys=lambda: derive_keyring(srv.keys, "ams-1"))

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(reporter.run(stop))
        await asyncio.sleep(0.55)
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
    report = srv.call(lambda: srv.replica.state.reports["ams-1"])
    assert 4 <= report.seq <= 7
    assert set(report.health.popularity) == {f"t/p{i}.mp4" for i in range(40, 50)}  # the hottest


def test_an_unsigned_reporter_is_refused(srv: ServerThread) -> None:
    store = FakeStore({"t/a.mp4"})
    reporter = Reporter("ams-1", "ams", [srv.url], 0.1, store.snapshot, store.inventory)
    asyncio.run(rounds(reporter, 1))
    (status,) = reporter.status()
    assert "401" in (status.last_error or "") and status.need_full


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        Reporter("a", "s", [], 1.0, lambda: None, lambda: None)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError):
        Reporter("a", "s", ["http://x"], 0, lambda: None, lambda: None)  # type: ignore[arg-type, return-value]


def test_bgp_routes_travel_whole_then_as_deltas_and_whole_again_after_a_gap(srv: ServerThread) -> None:
    """The appliance's route table (oca.bgp.table) through the reporter: the first report carries it
    whole, changes go as deltas, a replica that lost it asks for it whole (routes_need_full)."""
    from oca.bgp.messages import Attributes
    from oca.bgp.policy import Policy
    from oca.bgp.table import Peer, RouteTable

    table = RouteTable([Peer("v4", "192.0.2.1", 64500)], Policy(40027), 90, now=0.0)
    table.on_state("192.0.2.1", "up", 0.0)
    table.on_update("192.0.2.1", Attributes((64500,), med=5), ["10.0.0.0/8", "10.1.0.0/16"], [], 1.0)
    store = FakeStore({"t/a.mp4"})
    reporter = Reporter("ams-1", "ams", [srv.url], 0.1, store.snapshot, store.inventory,
                        keys=derive_keyring(srv.keys, "ams-1"), routes=table.best)

    def routes() -> dict:
        return srv.call(lambda: dict(srv.replica.state.routes.routes_of("ams-1")))

    def step(i: int) -> None:
        if i == 0:
            assert set(routes()) == {"10.0.0.0/8", "10.1.0.0/16"} and routes()["10.0.0.0/8"].med == 5
            table.on_update("192.0.2.1", Attributes((64500, 64510)), ["10.2.0.0/16"], ["10.1.0.0/16"], 2.0)
        if i == 1:
            assert set(routes()) == {"10.0.0.0/8", "10.2.0.0/16"}
            assert routes()["10.2.0.0/16"].as_path == (64500, 64510)
            srv.call(lambda: srv.replica.state.routes.drop("ams-1"))  # as a restarted replica
            table.on_update("192.0.2.1", Attributes((64500,)), ["10.3.0.0/16"], [], 3.0)
        if i == 2:
            assert reporter.status()[0].routes_need_full and routes() == {}
        if i == 3:
            assert set(routes()) == {"10.0.0.0/8", "10.2.0.0/16", "10.3.0.0/16"}

    asyncio.run(rounds(reporter, 4, step))
    got = srv.call(lambda: dict(srv.replica.state.route_updates))
    assert got == {"replace": 2, "apply": 1, "gap": 1}
    assert not reporter.status()[0].routes_need_full
