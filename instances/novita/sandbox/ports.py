"""Loopback listeners that stand in for an instance's ports.

tcp ports: a socket is bound for the whole life of the instance (so the endpoint is stable) but
listens only while the instance is running, so connections succeed exactly then.
http ports: like Novita's edge, the listener is always up and answers 502 while the instance
(the service behind it) is not running, 200 once it is. One background thread accepts on all
of them; an http connection is answered on a short-lived thread of its own.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import threading
import time
from typing import TYPE_CHECKING

from .base import _GONE

if TYPE_CHECKING:
    from .state import _Instance


class _TcpEndpoint:
    """A loopback socket standing in for one tcp or http port of one instance."""

    __slots__ = ("port", "sock", "bound_port", "listening", "kind")

    def __init__(self, port: int, sock: socket.socket | None, bound_port: int, kind="tcp"):
        self.port = port
        self.sock = sock
        self.bound_port = bound_port
        self.listening = False
        self.kind = kind


_EDGE_TIMEOUT = 2.0  # seconds an http connection may take to send its request


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

    def _alloc_tcp(self, ports, instance_id: str = "") -> list[_TcpEndpoint] | None:
        endpoints = []
        for port, kind in ports:
            sock = self._bind() if self._tcp_open < self.max_tcp_listeners else None
            if sock is None:
                if kind == "tcp":
                    # Over the cap: point at the sandbox's own HTTP port, which always accepts.
                    endpoints.append(_TcpEndpoint(port, None, self.port or 0))
                # An http port over the cap is served under /_sandbox/ports/ instead.
                continue
            self._tcp_open += 1
            endpoint = _TcpEndpoint(port, sock, sock.getsockname()[1], kind)
            if kind == "http":
                sock.listen(16)
                sock.setblocking(False)
                self._selector.register(sock, selectors.EVENT_READ, (instance_id, port))
                endpoint.listening = True
            endpoints.append(endpoint)
        return endpoints or None

    def _edge(self, conn: socket.socket, instance_id: str, port: int) -> None:
        """Answer one HTTP request on an instance's http port the way Novita's edge does."""
        try:
            conn.setblocking(True)
            conn.settimeout(_EDGE_TIMEOUT)
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 16384:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            with self._lock:
                inst = self._live(instance_id, time.time())
                state = inst.state(time.time()) if inst is not None else None
            if state == "running":
                status = "200 OK"
                body = json.dumps({"instanceId": instance_id, "port": port, "status": state})
            elif state is None:
                status, body = "404 Not Found", "no such instance"
            else:
                status, body = "502 Bad Gateway", "502 Bad Gateway"
            data = body.encode()
            head = (
                f"HTTP/1.1 {status}\r\nContent-Length: {len(data)}\r\n"
                "Content-Type: text/plain\r\nConnection: close\r\n\r\n"
            )
            conn.sendall(head.encode() + (b"" if request.startswith(b"HEAD ") else data))
        except OSError:
            pass  # the prober gave up or hung up: nothing to answer
        finally:
            conn.close()

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
            if ep.sock is None or ep.listening == want or ep.kind == "http":
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
                if isinstance(key.data, tuple):
                    threading.Thread(target=self._edge, args=(conn, *key.data), daemon=True).start()
                else:
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
