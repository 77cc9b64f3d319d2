"""Counters and gauges in the Prometheus text format, without a client library: the hot path does a
dict increment on a precomputed key."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

Labels = tuple[tuple[str, str], ...]

HELP = {
    "steering_decisions_total": "Steering answers by how the client was located and the outcome.",
    "steering_heartbeats_total": "Heartbeats received, by result.",
    "steering_inventory_updates_total": "Inventory updates by verdict (replace, apply, gap).",
    "steering_health_transitions_total": "Appliance status changes, by new status and reason.",
    "steering_reloads_total": "Reloads of the fleet, keys and GeoIP database, by result.",
    "steering_errors_total": "Requests answered with an error, by reason (internal: a bug, logged with its traceback).",
}


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[tuple[str, Labels], float] = defaultdict(float)

    def inc(self, name: str, labels: Labels = (), amount: float = 1.0) -> None:
        self.counters[(name, labels)] += amount

    def value(self, name: str, **labels: str) -> float:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self, gauges: Iterable[tuple[str, str, Labels, float]] = ()) -> str:
        """Counters, then gauges given as (name, help, labels, value)."""
        lines: list[str] = []
        by_name: dict[str, list[tuple[Labels, float]]] = defaultdict(list)
        for (name, labels), value in sorted(self.counters.items()):
            by_name[name].append((labels, value))
        for name, samples in by_name.items():
            lines += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} counter"]
            lines += [f"{name}{_labels(labels)} {_num(v)}" for labels, v in samples]
        typed: set[str] = set()
        for name, help_text, labels, value in gauges:
            if name not in typed:
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
                typed.add(name)
            lines.append(f"{name}{_labels(labels)} {_num(value)}")
        return "\n".join(lines) + "\n"


def labels(**items: str) -> Labels:
    return tuple(sorted(items.items()))


def _labels(items: Labels) -> str:
    if not items:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in items)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
