"""The offload simulator on a tiny trace: its columns, its first column built from the product's own
defaults, and one true invariant — with equal file sizes and whole-file reads, Belady (free refills at
the same fill runs, hindsight, evict-furthest) is the optimum, so no policy beats it. No timing and no
tuned number is asserted."""
from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest

from fill.core.model import PlanPolicy
from steering.core.admission import PullPolicy
from loadtests import offload_sim
from loadtests.offload_policies import FillSim, refill_points, run_belady, run_fill
from loadtests.offload_trace import TraceSpec, catalog_bytes, make_trace, next_uses
from oca.config import load as load_oca_config
from steering.config import PullThroughConfig as SteeringPull

TINY = TraceSpec(titles=60, days=3, per_day=1500, releases=2, announce=2, churn=0.5, seed=7, equal_sizes=True,
                 whole_reads=True)


def test_columns_shipped_first_from_product_defaults():
    cols = offload_sim.columns()
    assert list(cols) == ["shipped", "nopull", "served", "lru", "belady"]
    ship = cols["shipped"]
    assert ship.policy == PlanPolicy() and ship.signal == "demand"
    assert ship.eviction == offload_sim.store_eviction() == "lowest-popularity"
    # the first column is what ships: steering's admission default, and the appliance's pull-through as
    # the example config an operator installs has it
    shipped_on = SteeringPull().enabled and load_oca_config(offload_sim.EXAMPLE_OCA).pull_through.enabled
    assert shipped_on and offload_sim.PULL_THROUGH
    assert ship.pull == SteeringPull().policy == PullPolicy()
    assert cols["nopull"].pull is None and cols["served"].signal == "served"


@pytest.mark.parametrize("seed", [7, 8])
def test_belady_bounds_every_policy_on_equal_sizes(seed):
    spec = replace(TINY, seed=seed)
    rows = offload_sim.evaluate(spec, (0.1, 0.3), offload_sim.columns())
    for row in rows:
        assert set(row.results) == {"shipped", "nopull", "served", "lru", "belady"}
        best = row.ratio("belady")
        for name, result in row.results.items():
            assert 0.0 <= result.ratio <= 1.0 and result.total > 0
            assert result.ratio <= best + 1e-12, (name, row.fraction, result.ratio, best)


def test_belady_bounds_pull_through_variants():
    t = make_trace(TINY)
    cap = int(catalog_bytes(t) * 0.2)
    best = run_belady(t, cap, next_uses(t, refill_points(t))).ratio
    for sim in (FillSim(replace(PlanPolicy(), reactive_share=0.3), pull=PullPolicy(1)),
                FillSim(pull=PullPolicy(2), eviction="lru"), FillSim(pull=PullPolicy(1), tinylfu=True)):
        assert run_fill(t, cap, sim).ratio <= best + 1e-12


def test_pull_through_never_evicts_the_manifest():
    """Pulled files live in the room the plan leaves: with every miss pulled, a plan that fills the whole
    disk (capacity_fraction 1, no share) leaves nothing to pull into, so it serves exactly what the same
    plan serves without pull-through."""
    t = make_trace(TINY)
    cap = int(catalog_bytes(t) * 0.2)
    full = replace(PlanPolicy(), capacity_fraction=1.0)
    assert run_fill(t, cap, FillSim(full, pull=PullPolicy(1))).hit == run_fill(t, cap, FillSim(full)).hit


def test_trace_is_seeded_and_shaped():
    one, two = make_trace(TINY), make_trace(TINY)
    assert one == two
    assert len(one.requests) == TINY.days * TINY.per_day and one.day_starts[-1] == len(one.requests)
    assert all(len(h) == 25 and h[0] == s for h, s in zip(one.hour_starts, one.day_starts))
    assert len(set(one.sizes)) == 1 and all(b == one.sizes[f] for f, b in one.requests)


def test_cli_table_runs(capsys):
    assert offload_sim.main(["--titles", "60", "--days", "2", "--requests-per-day", "1500", "--releases", "2",
                             "--sizes", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "shipped" in out and "belady" in out and "PlanPolicy(" in out


def test_store_default_eviction_is_read_from_oca():
    from oca.config import StoreConfig

    assert offload_sim.store_eviction() == next(f.default for f in msgspec.structs.fields(StoreConfig)
                                                if f.name == "eviction")
