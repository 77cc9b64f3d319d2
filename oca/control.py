"""What the control endpoints (oca.admin) read and change of the supervisor, as a Protocol: the
daemon (oca.daemon.Supervisor, which satisfies it) starts the admin app, so the admin module names
the supervisor by its shape and imports nothing of the daemon — the import goes one way."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from contracts.supervise import TaskSupervisor
from oca.config import OcaConfig
from oca.drain import DrainState
from oca.store.health import DiskHealth
from oca.store.scrub import ScrubStats
from oca.store.store import Store


class SupervisorView(Protocol):
    config: OcaConfig
    store: Store
    tasks: TaskSupervisor
    metrics_path: Path  # the workers' shared counters (oca.metrics)
    egress_bps: float
    draining: bool  # stopping (SIGTERM)
    maintenance: DrainState  # the operator's drain (`oca drain`)
    admin_token: str  # the POSTs that change state need it as a bearer token (oca.drain)
    disk_health: list[DiskHealth]
    scrub_stats: ScrubStats
    bgp: Any  # oca.bgp.speaker.Speaker, or None without [bgp]
    certificates: Any  # oca.tlsconf.CertificateWatch, or None without [tls]

    def health_report(self) -> dict[str, Any]: ...

    async def set_drain(self, state: DrainState) -> DrainState: ...
