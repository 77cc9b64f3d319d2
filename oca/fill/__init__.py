"""The fill agent: one run of `oca fill -c FILE` on an appliance (Open Connect's nightly push fill).

It lives beside the appliance's store (oca.store), which it writes through, and below nothing: it
imports contracts (the manifest's wire format, keys, tokens) and oca's store and config, never the
planner (`fill`, on the control plane) nor steering. The manifest comes over HTTP from steering,
which serves what `fill plan` wrote.

- `oca.fill.core`: the agent's pure rules (manifest diff, window, failover and backoff, token
  bucket, byte ranges).
- `oca.fill.agent.run` / `oca.fill.cli.main`: one run; `oca fill --help` lists the flags.
"""
