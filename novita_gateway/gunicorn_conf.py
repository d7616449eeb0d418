"""gunicorn server hooks for the Procfile's web line (`-c novita_gateway/gunicorn_conf.py`).

The web line runs with `--reuse-port`: each worker listens on a socket of its own and the kernel
spreads new connections over them. With one shared socket, whichever worker woke first took
them, and a burst of keep-alive connections often landed on one worker: that worker's core
saturated while the other stayed idle, for as long as the clients kept their connections.
"""

from __future__ import annotations

import errno
import socket


def address_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port.

    Binding without SO_REUSEPORT fails beside any listener, even one that set it; SO_REUSEADDR
    keeps a closed server's lingering TIME_WAIT connections from counting as a listener."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def on_starting(server) -> None:
    """Refuse to start on a port another server holds.

    With SO_REUSEPORT the kernel would let a second gateway (or anything else run by the same
    user) bind the same port and silently share its traffic, where a plain bind fails with
    "address in use". A re-exec'd master (USR2 upgrade) shares the port on purpose: skip it."""
    if not server.cfg.reuse_port or server.master_pid:
        return
    for address in server.cfg.address:
        if not isinstance(address, tuple):
            continue  # a unix socket path: no SO_REUSEPORT sharing there
        host, port = address[0], address[1]
        if port and address_in_use(host, port):
            raise RuntimeError(f"{host}:{port} is already in use by another server")
