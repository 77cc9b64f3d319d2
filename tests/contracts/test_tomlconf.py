"""contracts.tomlconf.Section: a misspelt key is reported as the unknown key it is — before the
required one it hides, in every service's config parser — and an unknown key names the setting it
resembles."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from contracts.tomlconf import ConfigError, Section

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mapping, read, message", [
    ({"locaton": "/x"}, lambda s: s.str("location"),
     "origin.locaton: unknown setting (did you mean 'location'? origin.location is required)"),
    ({}, lambda s: s.str("location"), "origin.location: required"),
    ({"region": "x"}, lambda s: s.str("location"), "origin.location: required"),  # not alike: no guess
    ({"fleet_url": "http://x"}, lambda s: s.path("fleet_file"), "origin.fleet_file: required"),  # 0.74: both real
    ({"location": "/x", "regoin": "x"}, lambda s: (s.str("location"), s.str("region", None), s.done()),
     "origin.regoin: unknown setting (did you mean 'region'?)"),
    ({"location": "/x", "zzz": 1}, lambda s: (s.str("location"), s.done()), "origin.zzz: unknown setting"),
    ({"orign": {}}, None, "orign: unknown setting (did you mean 'origin'? origin is required)"),
], ids=["typo-of-required", "missing", "missing-unlike", "alike-but-real", "typo-of-optional", "unknown",
        "typo-of-table"])
def test_section_names_the_typo(mapping, read, message):
    with pytest.raises(ConfigError) as err:
        if read is None:
            Section(mapping).section("origin")
        else:
            read(Section({"origin": mapping}).section("origin"))
    assert str(err.value) == message


def _playback(text: str):
    from playback.config import parse
    return parse(tomllib.loads(text))


def _oca(text: str):
    from oca.config import parse
    return parse(tomllib.loads(text))


def _steering(text: str):
    from steering.config import parse
    return parse(tomllib.loads(text))


def _origin(text: str):
    from origin.config import parse
    return parse(tomllib.loads(text))


def _plan(text: str):
    from fill.config import parse
    return parse(tomllib.loads(text))


PLAYBACK = '[playback]\nsteering_urls = ["http://s:8100"]\n'
DISK = '[[tiers.ssd]]\npath = "/srv/ssd0"\n'


@pytest.mark.parametrize("parse, text, key", [
    (_playback, PLAYBACK + '[origin]\nlocaton = "/srv/origin"\n', "origin.locaton"),
    (_playback, '[playback]\nsteering_url = ["http://s:8100"]\n[origin]\nlocation = "/o"\n',
     "playback.steering_url"),
    (_oca, '[appliance]\nid = "a"\n[tokens]\nkey_fil = "/k.toml"\n[store]\nindex = "/i.db"\n' + DISK,
     "tokens.key_fil"),
    (_oca, '[appliance]\nid = "a"\n[tokens]\nkey_file = "/k.toml"\n[stor]\nindex = "/i.db"\n' + DISK, "stor"),
    (_steering, '[steering]\nfleet_fil = "/f.toml"\nkey_file = "/k.toml"\ndefault_site = "a"\n',
     "steering.fleet_fil"),
    (_origin, '[origin]\nlocaton = "/srv/origin"\n', "origin.locaton"),
    (_plan, '[planner]\nkeyfile = "/k.toml"\n[steering]\nreplicas = ["http://s:8100"]\n[origin]\nlocation = "/o"\n',
     "planner.keyfile"),
], ids=["playback-location", "playback-steering-urls", "oca-key-file", "oca-store-table", "steering-fleet-file",
        "origin-location", "plan-key-file"])
def test_every_parser_reports_a_typo_as_unknown_first(parse, text, key):
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert str(err.value).startswith(f"{key}: unknown setting (did you mean ")
