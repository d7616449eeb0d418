"""Loopback TCP listeners that stand in for an instance's tcp ports.

A socket is bound for the whole life of the instance (so the endpoint is stable) but listens
only while the instance is running; one background thread accepts on all of them.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from typing import TYPE_CHECKING

from .base import _GONE

if TYPE_CHECKING:
    from .state import _Instance


class _TcpEndpoint:
    """A loopback socket standing in for one tcp port of one instance."""

    __slots__ = ("port", "sock", "bound_port", "listening")

    def __init__(self, port: int, sock: socket.socket | None, bound_port: int):
        self.port = port
        self.sock = sock
        self.bound_port = bound_port
        self.listening = False


class PortListeners:
    """TCP listener handling for Sandbox (a mixin: it uses the sandbox's lock and state)."""

    def _bind(self, port: int = 0) -> socket.socket | None:
        for candidate in dict.fromkeys((port, 0)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                # Rebinding the same port right after closing needs this (TIME_WAIT).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.host, candidate))
                return sock
            except OSError:
                sock.close()
        return None

    def _alloc_tcp(self, ports) -> list[_TcpEndpoint] | None:
        endpoints = []
        for port, kind in ports:
            if kind != "tcp":
                continue
            sock = self._bind() if self._tcp_open < self.max_tcp_listeners else None
            if sock is None:
                # Over the cap: point at the sandbox's own HTTP port, which always accepts.
                endpoints.append(_TcpEndpoint(port, None, self.port or 0))
            else:
                self._tcp_open += 1
                endpoints.append(_TcpEndpoint(port, sock, sock.getsockname()[1]))
        return endpoints or None

    def _release_tcp(self, inst: _Instance) -> None:
        for ep in inst.tcp or ():
            if ep.sock is None:
                continue
            if ep.listening:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(ep.sock)
            ep.sock.close()
            ep.sock = None
            ep.listening = False
            self._tcp_open -= 1

    def _sync_tcp(self, inst: _Instance, now: float) -> None:
        """Make each listener accept exactly while the instance is running."""
        if not inst.tcp:
            return
        state = inst.state(now)
        if state == _GONE:
            self._release_tcp(inst)
            return
        want = state == "running"
        for ep in inst.tcp:
            if ep.sock is None or ep.listening == want:
                continue
            if want:
                ep.sock.listen(16)
                ep.sock.setblocking(False)
                self._selector.register(ep.sock, selectors.EVENT_READ)
                ep.listening = True
            else:
                # A socket cannot stop listening; close it and keep the port reserved by
                # binding a fresh, non-listening socket to it (connections are then refused).
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(ep.sock)
                ep.sock.close()
                ep.listening = False
                ep.sock = self._bind(ep.bound_port)
                if ep.sock is None:
                    self._tcp_open -= 1
                    ep.bound_port = self.port or 0
                else:
                    ep.bound_port = ep.sock.getsockname()[1]

    def _after_transition(self, inst: _Instance, now: float) -> None:
        self._sync_tcp(inst, now)
        if inst.tcp:
            self._watch.add(inst.id)
            self._wake()

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):  # full buffer: a wake-up is already pending
                self._wake_w.send(b"\0")

    def _net_loop(self) -> None:
        while not self._stopping.is_set():
            # Poll finely only while some instance's listeners may still have to flip.
            timeout = 0.01 if self._watch else 1.0
            try:
                events = self._selector.select(timeout)
            except (OSError, ValueError):
                events = []
                time.sleep(timeout)
            for key, _mask in events:
                if key.data == "wake":
                    with contextlib.suppress(OSError):
                        key.fileobj.recv(4096)  # type: ignore[union-attr]
                    continue
                try:
                    conn, _addr = key.fileobj.accept()  # type: ignore[union-attr]
                except OSError:
                    continue  # closed under us by a state change: nothing to accept
                conn.close()
            if self._watch:
                with self._lock:
                    now = time.time()
                    for iid in list(self._watch):
                        inst = self._instances.get(iid)
                        if inst is None:
                            self._watch.discard(iid)
                            continue
                        self._sync_tcp(inst, now)
                        if inst.state(now) == _GONE:
                            self._drop(inst)
                        elif now >= inst.settled_at():
                            self._watch.discard(iid)
