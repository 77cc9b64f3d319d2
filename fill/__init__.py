"""Fill: the nightly push of content onto appliances (Open Connect's proactive fill).

- `fill.core`: the pure planner (popularity per content region, copies, rendezvous placement within
  SSD/HDD capacity) and the agent's pure rules (manifest diff, window, failover and backoff, token
  bucket, byte ranges).
- `fill.service.build_manifests`: what steering calls to serve `GET /v1/fill-manifest?appliance=ID`
  (wire schema: contracts.manifest).
- `fill.agent` / `fill.agent_cli.main`: one run of `oca fill -c FILE` on an appliance.
"""
