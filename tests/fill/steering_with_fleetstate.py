"""`steering serve` as a real process, with GET /v1/fleet/state registered even where steering.server's
make_app does not register it yet (the route's handler is steering.fleetstate; the two lines that
register it belong in make_app). Where make_app has the route, this is plain `steering serve`.

    PYTHONPATH=<repo> python tests/fill/steering_with_fleetstate.py serve -c steering.toml
"""
from __future__ import annotations

import sys

from steering import server
from steering.fleetstate import fleet_state_handler

_make_app = server.make_app


def make_app(replica, config_path=None):
    app = _make_app(replica, config_path)
    if not any(getattr(r.resource, "canonical", None) == "/v1/fleet/state" for r in app.router.routes()):
        app.router.add_get("/v1/fleet/state", fleet_state_handler(replica))
    return app


if __name__ == "__main__":
    server.make_app = make_app  # serve() looks make_app up in its module at call time
    from steering.cli import main

    sys.exit(main(sys.argv[1:]))
