"""Fill's planner, on the control plane: `fill plan` decides what every appliance should hold tonight.

- `fill.core`: the pure planner (popularity per content region, copies, rendezvous placement within
  SSD/HDD capacity, sources per file).
- `fill.service`: the planner's inputs as plain values (catalog check, demand in plays, manifests).
- `fill.credentials`: each manifest signed for its appliance, with a fill credential per source.
- `fill.job` / `fill.cli` (`fill plan -c FILE`): one run; it gathers the fleet state and demand over
  HTTP (fill.gather, fill.fleetstate), the catalog from the origin, and writes versioned manifests
  to the origin store (fill.manifeststore), which steering replicas serve as stored.

The agent that acts on a manifest runs on each appliance beside its store: `oca.fill` (`oca fill`).
Nothing here imports oca or steering, and neither imports this package.
"""
