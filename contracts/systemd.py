"""systemd's notify protocol, shared by every daemon's `Type=notify` unit: READY=1 once serving,
WATCHDOG=1 while alive, STOPPING=1 when draining. One datagram to $NOTIFY_SOCKET; nothing at all
outside systemd."""
from __future__ import annotations

import os
import socket


def sd_notify(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError:
        pass  # a service manager that went away must not take the daemon with it
