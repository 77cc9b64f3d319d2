"""`oca bgp`: the appliance's BGP as an ISP engineer reads it, in the manner of `birdc show
protocols` and `birdc show route` (pure: the admin endpoint's JSON in, text out)."""
from __future__ import annotations

import time
from typing import Any

STATES = {"idle": "Idle", "connect": "Connect", "up": "Established", "down": "Down"}


def protocols(bgp: dict[str, Any]) -> str:
    speaker = bgp.get("speaker") or {}
    head = (f"BGP: local AS {bgp.get('local_as')}, router id {bgp.get('router_id')}, hold time "
            f"{bgp.get('hold_time_s')} s, ExaBGP {'pid ' + str(speaker['pid']) if speaker.get('pid') else 'not running'}"
            f", {bgp.get('prefixes', 0)} prefixes to steering")
    rows = [("Name", "Peer", "Peer AS", "State", "Since", "Prefixes", "Refused", "Info")]
    for s in bgp.get("sessions", []):
        refused = s.get("refused") or {}
        info = [f"{reason} {n}" for reason, n in sorted(refused.items())]
        if s.get("withdraw_in_s") is not None:
            info.insert(0, f"routes withdrawn in {s['withdraw_in_s']} s")
        if s.get("stale"):
            info.insert(0, f"{s['stale']} stale")
        if s.get("last_error") and s.get("state") != "up":
            info.append(s["last_error"][:80])
        rows.append((s["name"], s["peer"], str(s["peer_as"]), STATES.get(s["state"], s["state"]),
                     _when(s.get("since")), str(s["prefixes"]), str(sum(refused.values())), "; ".join(info)))
    return head + "\n" + _table(rows)


def routes(bgp: dict[str, Any]) -> str:
    rows = [("Prefix", "From", "AS path", "MED", "Local pref", "Communities")]
    for r in bgp.get("routes", []):
        rows.append((r["prefix"], r.get("from") or "?", " ".join(map(str, r["as_path"])) or "(empty)",
                     "-" if r["med"] is None else str(r["med"]),
                     "-" if r["local_pref"] is None else str(r["local_pref"]), " ".join(r["communities"])))
    return _table(rows) + f"\n{len(rows) - 1} routes"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


__all__ = ["protocols", "routes"]
