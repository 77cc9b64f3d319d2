"""Pathways that mean what they say: one per site, named after it, each file's URL on that site's best
appliance for the file. Pure.

Fill places files one at a time (rendezvous per key), so an appliance rarely holds a whole title,
while a site usually does: a site is what a pathway can honestly name. Rules, each visible in the
tests (tests/playback/test_playback_pathways.py):
- A pathway's label is its site's id, and every URL in it is on an appliance of that site: where its
  bytes come from is what it says. (Steering's answer names no site? Then each appliance is its own.)
- Within a site, a file's holders come before its non-holders (steering's `holds` flag per URL; then
  steering's own order). A video rendition the site is known not to hold is left out of its pathway
  when the site holds another: a player there must not be led to a 404. A pathway needs every audio
  rendition and one video rendition.
- Pathways rank holders first too: every URL on a holder before any that relies on a non-holder, then
  the more renditions, then steering's ranks summed. A second pathway with the same appliances as one
  before it is not emitted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from contracts.catalog import TitleEntry
from playback.core import parts
from playback.core.parts import BadLocation, PlaybackError, Url

_PATHWAY_CHARS = re.compile(r"[^A-Za-z0-9._-]")


class NoLocations(PlaybackError):
    """Steering answered, but some file has no appliance (nothing healthy holds it)."""
    status_hint = 503
    reason = "no-locations"


@dataclass(frozen=True)
class Where:
    """What the fleet says about a URL's origin: its appliance and that appliance's site."""

    appliance: str
    site: str


@dataclass(frozen=True)
class Pathway:
    id: str
    urls: Mapping[str, Url]  # file key -> signed URL on one appliance of this pathway's site
    site: str = ""
    appliances: Mapping[str, str] = field(default_factory=dict)  # file key -> the appliance it comes from
    held: Mapping[str, bool | None] = field(default_factory=dict)  # file key -> steering's holds (None: unsaid)

    @property
    def hosts(self) -> frozenset[str]:
        """The appliances its bytes come from (two pathways with the same hosts are the same pathway)."""
        return frozenset(self.appliances.values()) if self.appliances else frozenset(u.origin for u in self.urls.values())

    @property
    def unheld(self) -> int:
        return sum(1 for h in self.held.values() if h is False)


def pathway_id(name: str) -> str:
    return _PATHWAY_CHARS.sub("_", name)[:64] or "p"


@dataclass(frozen=True)
class _Located:
    url: Url
    where: Where
    holds: bool | None
    rank: int


def _ranked(key: str, urls: Sequence[str], flags: Sequence[bool], where: Callable[[str], Where],
            on_refused: Callable[[str], None] | None) -> list[_Located]:
    """Steering's URLs for one file, parsed (a malformed one is left out and reported)."""
    out = []
    for rank, text in enumerate(urls):
        try:
            url = parts.parse_url(text, f"steering's URL for {key}")
        except BadLocation as exc:
            if on_refused is not None:
                on_refused(str(exc))
            continue
        out.append(_Located(url, where(url.origin), flags[rank] if rank < len(flags) else None, rank))
    return out


def _best(found: list[_Located]) -> _Located:
    """Holders first, then appliances steering did not say about, then non-holders; steering's order within."""
    return min(found, key=lambda c: ({True: 0, None: 1, False: 2}[c.holds], c.rank))


def build_pathways(entry: TitleEntry, locations: Mapping[str, Sequence[str]], where: Callable[[str], Where],
                   max_pathways: int = 4, holds: Mapping[str, Sequence[bool]] | None = None,
                   on_refused: Callable[[str], None] | None = None) -> tuple[Pathway, ...]:
    """Steering's ranked URLs per file as one pathway per site (see the module's rules). NoLocations
    when a file has no URL at all or no site can play the title."""
    ranked = {r.key: _ranked(r.key, locations.get(r.key) or (), (holds or {}).get(r.key) or (), where, on_refused)
              for r in entry.renditions}
    missing = [key for key, found in ranked.items() if not found]
    if missing:
        raise NoLocations(f"no appliance serves {missing[0]}")
    sites: list[str] = []
    for found in ranked.values():
        sites += [c.where.site for c in found if c.where.site not in sites]
    candidates = [p for p in (_site_pathway(entry, site, ranked) for site in sites) if p is not None]
    out: list[Pathway] = []
    for p, _ in sorted(candidates, key=lambda item: item[1]):
        if all(p.hosts != q.hosts for q in out):
            out.append(p)
    if not out:
        raise NoLocations("no site holds a playable set of renditions")
    return tuple(_unique_ids(out[:max_pathways]))


def _site_pathway(entry: TitleEntry, site: str,
                  ranked: Mapping[str, list[_Located]]) -> tuple[Pathway, tuple[int, int, int, int, str]] | None:
    """The site's pathway and its sort key, or None when it can't play the title."""
    chosen = {}
    for key, found in ranked.items():
        here = [c for c in found if c.where.site == site]
        if here:
            chosen[key] = _best(here)
    videos = [v.key for v in entry.video if v.key in chosen]
    if any(chosen[k].holds is not False for k in videos):  # a known 404 is no rendition to offer
        for k in videos:
            if chosen[k].holds is False:
                del chosen[k]
    if not all(a.key in chosen for a in entry.audio) or not any(v.key in chosen for v in entry.video):
        return None
    pathway = Pathway(pathway_id(site), {k: c.url for k, c in chosen.items()}, site,
                      {k: c.where.appliance for k, c in chosen.items()}, {k: c.holds for k, c in chosen.items()})
    unheld = pathway.unheld
    key = (int(unheld > 0), len(entry.renditions) - len(chosen), unheld, sum(c.rank for c in chosen.values()), site)
    return pathway, key


def _unique_ids(pathways: list[Pathway]) -> list[Pathway]:
    """Site ids that sanitise to the same pathway id get a suffix (".2", ...)."""
    seen: set[str] = set()
    out = []
    for p in pathways:
        pid, n = p.id, 2
        while pid in seen:
            pid, n = f"{p.id[:60]}.{n}", n + 1
        seen.add(pid)
        out.append(p if pid == p.id else Pathway(pid, p.urls, p.site, p.appliances, p.held))
    return out


def where_in(fleet_sites: Mapping[str, tuple[str, str]]) -> Callable[[str], Where]:
    """A `where` over {URL origin: (appliance id, site id)}; an origin the fleet does not name is its
    own appliance and site (steering knows its fleet; playback's copy may lag)."""
    def where(origin: str) -> Where:
        known = fleet_sites.get(origin)
        if known is not None:
            return Where(*known)
        name = pathway_id(origin.split("//", 1)[-1])
        return Where(name, name)
    return where


__all__ = ["Pathway", "Where", "NoLocations", "build_pathways", "pathway_id", "where_in"]
