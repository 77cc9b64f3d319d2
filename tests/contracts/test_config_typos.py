"""Every service's config parser (all on contracts.structconf) reports a misspelt key as the unknown
key it is — before the required one it hides — naming the setting it resembles."""
from __future__ import annotations

import tomllib

import pytest

from contracts.structconf import ConfigError


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
