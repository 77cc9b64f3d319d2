"""Reading Prometheus exposition text in tests with prometheus-client's own parser (so a scrape that
does not parse fails the test), instead of matching substrings of the text."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample by (name, labels): `samples(t)[("x_total", frozenset({("kind", "peer")}))]`."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str | Samples, name: str, **labels: str) -> float | None:
    """One sample's value (None when the series is absent)."""
    got = samples(text) if isinstance(text, str) else text
    return got.get((name, frozenset(labels.items())))


def total(text: str | Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels` (0 when there is none)."""
    got = samples(text) if isinstance(text, str) else text
    want = set(labels.items())
    return sum(v for (n, ls), v in got.items() if n == name and want <= ls)


def types(text: str) -> dict[str, str]:
    """Family name (without `_total`) -> its TYPE."""
    return {family.name: family.type for family in text_string_to_metric_families(text)}
