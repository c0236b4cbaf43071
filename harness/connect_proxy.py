"""kube-apiserver's ``cluster`` egress: an HTTP CONNECT proxy on a unix socket.

For a webhook Service the apiserver resolves the ClusterIP itself and sends
``CONNECT <clusterIP>:<port>`` (k8s.io/apiserver: the webhook ``ClientManager`` dials through
the ``Cluster`` network context; the default resolver is the ClusterIP resolver).
:class:`ConnectProxy` finds the Service with that ClusterIP and asks its router where on loopback
that Service's port is served (the control plane routes istiod Services to the local istiod of the
revision their selector names), then splices the stream there. It never dials anything else, so no
packet ever goes to a non-loopback address (kubelet dials for logs/exec are refused with 502).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client as k8s

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectCall:
    """One CONNECT the egress proxy received."""

    time: float
    target: str
    service: str  # "<namespace>/<name>" or "" when the IP is no Service's
    forwarded: bool


class _ConnectHandler(socketserver.StreamRequestHandler):
    """One CONNECT tunnel from kube-apiserver's egress dialer."""

    owner: ConnectProxy

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
            if len(head) > 16384:
                return
        head, _, rest = head.partition(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        if len(parts) != 3 or parts[0] != "CONNECT":
            self.request.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        target = parts[1]
        host, _, port = target.rpartition(":")
        service = self.owner.service_for(host.strip("[]"))
        upstream_port = self.owner.route(service, int(port)) if service and port.isdigit() else None
        self.owner._record(ConnectCall(time.time(), target, service, upstream_port is not None))
        if upstream_port is None:
            # Not a Service ClusterIP (e.g. a kubelet dial to a fake node), or nothing local serves it.
            self.request.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", upstream_port), timeout=5)
        except OSError:
            self.request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            return
        upstream.settimeout(None)
        self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            upstream.sendall(rest)
        _splice(self.request, upstream)


def _splice(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (dst,):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=pump, args=(b, a), daemon=True)
    t.start()
    pump(a, b)
    t.join(timeout=30)
    b.close()


class ConnectProxy:
    """HTTP CONNECT proxy on a unix socket: kube-apiserver's ``cluster`` egress.

    Forwards a CONNECT only when its IP is some Service's ClusterIP and `route` names a loopback
    port for that Service's port. Everything else is answered 502 and logged.
    """

    def __init__(
        self,
        socket_path: Path,
        api: Callable[[], k8s.ApiClient],
        route: Callable[[k8s.V1Service, int], int | None],
    ) -> None:
        self.socket_path = socket_path
        self._api = api
        self._route = route
        self._services: dict[str, k8s.V1Service] = {}
        self._calls: list[ConnectCall] = []
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        # Overridable for tests that run without a cluster.
        self.resolve: Callable[[str], str] = self._resolve_cluster_ip

    def route(self, service: str, port: int) -> int | None:
        """The loopback port serving `port` of Service "<namespace>/<name>", if any."""
        svc = self._services.get(service)
        return None if svc is None else self._route(svc, port)

    def calls(self) -> list[ConnectCall]:
        with self._lock:
            return list(self._calls)

    def _record(self, call: ConnectCall) -> None:
        with self._lock:
            self._calls.append(call)

    def service_for(self, ip: str) -> str:
        try:
            return self.resolve(ip)
        except Exception as e:
            log.warning("CONNECT %s: lookup failed: %s", ip, e)
            return ""

    def _resolve_cluster_ip(self, ip: str) -> str:
        """'<namespace>/<name>' of the Service whose ClusterIP is `ip`, or ''."""
        svcs = k8s.CoreV1Api(self._api()).list_service_for_all_namespaces(_request_timeout=5)
        for s in svcs.items:
            ips = set(s.spec.cluster_ips or []) | {s.spec.cluster_ip}
            if ip in ips:
                key = f"{s.metadata.namespace}/{s.metadata.name}"
                with self._lock:
                    self._services[key] = s
                return key
        return ""

    def start(self) -> None:
        if self.socket_path.exists():
            self.socket_path.unlink()
        proxy = self

        class Handler(_ConnectHandler):
            owner = proxy

        class Server(socketserver.ThreadingUnixStreamServer):
            daemon_threads = True

        self._server = Server(str(self.socket_path), Handler)
        self.socket_path.chmod(0o600)
        threading.Thread(target=self._server.serve_forever, name="egress-connect-proxy", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.socket_path.exists():
            self.socket_path.unlink()
