"""What the planner adds to each manifest before it leaves the control plane: a fill credential per
source the manifest names, and the signature the agent checks.

A credential for (source S, fetching appliance A) is a fill token signed with S's keys derived for A
(contracts.token.fill_keys over the keys derived for S from the master): S re-derives the same from its
own keys, so it opens S only, for A only, and expires. The manifest is then signed with A's own
derived keys. Pure: keys and clock come in, manifests go out. Credentials expire at a whole hour a
day and a half ahead, so every replica planning in the same hour mints the same bytes.
"""
from __future__ import annotations

from typing import Mapping

from contracts.keys import DerivedKeys
from contracts.manifest import ORIGIN, Manifest, sign_manifest
from contracts.token import fill_keys, fill_token

CREDENTIAL_TTL_S = 36 * 3600


def credential_expiry(now: float) -> int:
    return (int(now) // 3600) * 3600 + CREDENTIAL_TTL_S


def sources_of(manifest: Manifest) -> set[str]:
    """Who the manifest sends the appliance to: peers by id, and "origin" for an HTTP origin (or the
    agent's own configured origin, which may be one)."""
    names = set()
    for f in manifest.files:
        for s in f.sources:
            if s.kind == "peer" and s.appliance is not None:
                names.add(s.appliance)
            elif s.kind == "origin" and s.s3 is None:
                names.add(ORIGIN)
    return names


def authorize(manifest: Manifest, derived: DerivedKeys, now: float) -> Manifest:
    """`manifest` with a credential for each of its sources, signed for its appliance."""
    holder = manifest.appliance
    expires = credential_expiry(now)
    credentials = {source: fill_token(fill_keys(derived.for_holder(source), holder), expires, holder)
                   for source in sorted(sources_of(manifest))}
    return sign_manifest(manifest, derived.for_holder(holder), credentials)


def authorize_all(manifests: Mapping[str, Manifest], derived: DerivedKeys, now: float) -> dict[str, Manifest]:
    return {appliance: authorize(m, derived, now) for appliance, m in manifests.items()}


__all__ = ["authorize", "authorize_all", "credential_expiry", "sources_of"]
