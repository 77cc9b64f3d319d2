"""contracts.structconf: msgspec Structs from TOML/wire maps, every error naming the dotted key."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import pytest

from contracts.structconf import ConfigError, Conf, HttpUrl, convert, invalid, without_slash


class Tier(Conf):
    path: Path
    size: Annotated[int, msgspec.Meta(ge=1)] = 1
    kind: Literal["ssd", "hdd"] = "ssd"
    ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5

    def __post_init__(self) -> None:
        if self.size > 100:
            raise invalid("size", "too big for this tier")


class Origin(Conf):
    location: str
    key: Path | None = None


class Top(Conf):
    origin: Origin
    tiers: dict[str, list[Tier]] = {}
    names: list[str] = []
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 80


OK = {"location": "x"}

ERRORS = [
    ({"origin": {"locaton": "x"}}, "origin.locaton: unknown setting (did you mean 'location'? origin.location is required)"),
    ({"origin": OK, "portt": 3}, "portt: unknown setting (did you mean 'port'?)"),
    ({"origin": {**OK, "colour": 1}}, "origin.colour: unknown setting"),
    ({}, "origin: required"),
    ({"origin": "x"}, "origin: must be a table"),
    ({"origin": OK, "port": 0}, "port: must be at least 1"),
    ({"origin": OK, "port": 70000}, "port: must be at most 65535"),
    ({"origin": OK, "port": "80"}, "port: must be an integer"),
    ({"origin": OK, "port": 1.5}, "port: must be an integer"),
    ({"origin": OK, "port": True}, "port: must be an integer"),
    ({"origin": {**OK, "key": "rel"}}, "origin.key: must be an absolute path"),
    ({"origin": {**OK, "key": 3}}, "origin.key: must be a path string"),
    ({"origin": OK, "tiers": {"ssd": [{"path": "/a"}], "hdd": [{"path": "/b"}, {"path": "/c", "size": 0}]}},
     "tiers.hdd[1].size: must be at least 1"),
    ({"origin": OK, "tiers": {"hdd": [{"path": "/c", "size": 200}]}}, "tiers.hdd[0].size: too big for this tier"),
    ({"origin": OK, "tiers": {"hdd": [{"path": "/c", "kind": "nvme"}]}}, "tiers.hdd[0].kind: must be one of ssd, hdd"),
    ({"origin": OK, "tiers": {"hdd": [{"path": "/c", "ratio": 2}]}}, "tiers.hdd[0].ratio: must be at most 1"),
    ({"origin": OK, "tiers": {"hdd": [{"path": "/c", "sise": 1}]}}, "tiers.hdd[0].sise: unknown setting (did you mean 'size'?)"),
    ({"origin": OK, "names": "a"}, "names: must be a list of strings"),
    ({"origin": OK, "names": ["a", 1]}, "names[1]: must be a string"),
    ([], "(top level): must be a table"),
]


@pytest.mark.parametrize("data,message", ERRORS, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(ERRORS)])
def test_errors_name_the_dotted_key(data, message):
    with pytest.raises(ConfigError) as err:
        convert(Top, data)
    assert str(err.value).startswith(message), str(err.value)


def test_defaults_and_relative_paths_against_base():
    top = convert(Top, {"origin": {**OK, "key": "keys.toml"}, "tiers": {"hdd": [{"path": "/c", "ratio": 1}]}},
                  base=Path("/etc/opencdn"))
    assert top.origin.key == Path("/etc/opencdn/keys.toml")
    assert top.tiers["hdd"][0] == Tier(path=Path("/c"), size=1, kind="ssd", ratio=1.0)
    assert top.port == 80 and top.names == []


def test_the_callers_error_class():
    class WireError(ValueError):
        pass
    with pytest.raises(WireError, match=r"^port: must be at least 1$"):
        convert(Top, {"origin": OK, "port": 0}, error=WireError)


class Hop(msgspec.Struct, array_like=True, frozen=True):
    prefix: str
    path: list[Annotated[int, msgspec.Meta(ge=0, lt=1 << 32)]] = []


class Wire(Conf):
    name: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{1,8}$", extra={"says": "must be 1-8 of a-z"})]
    limit: Annotated[int, msgspec.Meta(ge=0)] | None = None
    amount: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    hops: list[Hop] = []
    counts: dict[Annotated[str, msgspec.Meta(pattern=r"^k")], Annotated[int, msgspec.Meta(ge=0)]] = {}
    disks: list[Tier] = []


WIRE_ERRORS = [
    ({"name": "Ab"}, "name: must be 1-8 of a-z"),
    ({"name": "a", "limit": -1}, "limit: must be at least 0"),
    ({"name": "a", "limit": "x"}, "limit: must be an integer or nil"),
    ({"name": "a", "amount": float("nan")}, "amount: must be finite"),
    ({"name": "a", "hops": [["10.0.0.0/8", [1, 1 << 32]]]}, "hops[0][1][1]: must be below 2^32"),
    ({"name": "a", "hops": [{"prefix": "x"}]}, "hops[0]: must be an array of 2: [prefix, path]"),
    ({"name": "a", "counts": {"k1": 1, "k2": -1}}, "counts.k2: must be at least 0"),
    ({"name": "a", "counts": {"k1": 1, "x": 1}}, "counts['x']: not a valid key (must match ^k)"),
    ({"name": "a", "disks": [{"size": 2}]}, "disks[0].path: required"),
    ({"name": "a", "disks": 3}, "disks: must be an array of maps"),
]


@pytest.mark.parametrize("data,message", WIRE_ERRORS, ids=[m.split(":")[0] for _, m in WIRE_ERRORS])
def test_wire_words(data, message):
    class WireError(ValueError):
        pass
    with pytest.raises(WireError) as err:
        convert(Wire, data, error=WireError, noun="map")
    assert str(err.value) == message


class Links(Conf):
    origin: HttpUrl | None = None
    replicas: tuple[HttpUrl, ...] = ()

    def __post_init__(self) -> None:
        without_slash(self, "origin", "replicas")


@pytest.mark.parametrize("data,message", [
    ({"origin": "ftp://x"}, "origin: must be an http(s) URL"),
    ({"origin": "https:///path"}, "origin: must be an http(s) URL"),
    ({"origin": "http://a b"}, "origin: must be an http(s) URL"),
    ({"replicas": ["http://s1:8100", "s2:8100"]}, "replicas[1]: must be an http(s) URL"),
])
def test_http_urls(data, message):
    with pytest.raises(ConfigError, match=rf"^{re.escape(message)}$"):
        convert(Links, data)


def test_http_urls_lose_their_trailing_slash():
    links = convert(Links, {"origin": "https://o.example.net/media/", "replicas": ["http://s1:8100/"]})
    assert (links.origin, links.replicas) == ("https://o.example.net/media", ("http://s1:8100",))
