"""Which region a play's viewing events count in: the client's site as steering located it for the play.

Steering localises every play (prefix or geo → the client's site) and says which site in its answer;
playback remembers it per (client address, title) for as long as the play's URLs are valid, so the
viewing events that client posts for that title later count as watched bytes in that region — the
planner then sees demand per region from playback too, not only from steering. An event with no play
remembered (another replica served the manifest, the client's address changed, the memory was full)
counts in the replica's configured default region. Bounded: the least recently played pairs go first.
"""
from __future__ import annotations

from collections import OrderedDict


class PlaySites:
    def __init__(self, max_entries: int = 200_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries: must be at least 1")
        self.max_entries = max_entries
        self._sites: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def played(self, client: str, title: str, site: str, until: float) -> None:
        """A play of `title` by `client`, located in `site`, whose URLs expire at `until`."""
        pair = (client, title)
        self._sites.pop(pair, None)
        self._sites[pair] = (site, until)
        while len(self._sites) > self.max_entries:
            self._sites.popitem(last=False)

    def region(self, client: str, title: str, now: float, default: str) -> str:
        """The site of `client`'s play of `title`, while its URLs are valid; else `default`."""
        got = self._sites.get((client, title))
        if got is None:
            return default
        site, until = got
        if now > until:
            del self._sites[(client, title)]
            return default
        return site

    def __len__(self) -> int:
        return len(self._sites)
