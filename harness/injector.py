"""A stand-in for istiod's admission webhooks, reached the way the apiserver really calls them.

Istio's webhook configurations (rendered from the real charts) call Service
``istiod-<rev>.istio-system:443`` at ``/inject`` and ``/validate``. There is no istiod here
(KWOK pods run nothing), so the apiserver's ``cluster`` egress (``connect_proxy.py``) splices
those calls to :class:`StandInInjector` on loopback. It terminates TLS with a certificate for the
requested server name (the apiserver sends SNI ``<svc>.<ns>.svc``) issued by the harness CA; the
webhooks' empty ``caBundle`` means "system roots", and the apiserver runs with ``SSL_CERT_FILE``
set to that CA. The Service named by SNI tells the revision (its ``istio.io/rev`` label, as the
istiod chart renders it).

The stand-in answers like istiod would as far as this project can observe (annotations
``istio.io/rev`` and ``sidecar.istio.io/status``, container ``istio-proxy`` running
``<hub>/proxyv2:<tag>`` of that revision). It never decides *which* revision injects a pod:
the apiserver picks the webhook from the real webhook configurations; the stand-in only
answers for the Service it was called through. Every call is logged for the tests.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes import config as k8s_config

log = logging.getLogger(__name__)

STATUS_ANNOTATION = "sidecar.istio.io/status"
REV_ANNOTATION = "istio.io/rev"
PROXY_CONTAINER = "istio-proxy"
# Used when neither the injector ConfigMap nor the istiod Deployment tells hub/tag.
FALLBACK_HUB = "docker.io/istio"
FALLBACK_TAG = "unknown"


class CertIssuer(Protocol):
    """Issues a serving certificate (PEM cert, PEM key) for one DNS name."""

    def issue_serving(self, dns_name: str) -> tuple[bytes, bytes]: ...


@dataclass(frozen=True)
class WebhookCall:
    """One admission request the stand-in answered."""

    time: float
    path: str
    server_name: str  # TLS SNI: <service>.<namespace>.svc
    service: str  # "<namespace>/<name>" of the Service called
    revision: str  # revision of that Service ("" if unknown)
    operation: str
    kind: str
    namespace: str
    name: str  # the object's name, or its generateName for pods of controllers
    patched: bool  # an injection patch was returned
    proxy_image: str = ""


def _escape(key: str) -> str:
    """JSON-pointer escaping of a map key (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _split_image(image: str) -> tuple[str, str]:
    """'<hub>/<name>:<tag>' -> (hub, tag); digests and registries with ports are handled."""
    ref = image.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    tag = ref[colon + 1 :] if colon > slash else "latest"
    repo = ref[:colon] if colon > slash else ref
    hub = repo[:slash] if slash >= 0 else ""
    return hub, tag


class StandInInjector:
    """HTTPS server on 127.0.0.1 answering istiod's /inject and /validate webhooks."""

    def __init__(self, issuer: CertIssuer, kubeconfig: Path, certdir: Path | None = None) -> None:
        self._issuer = issuer
        self._kubeconfig = kubeconfig
        self._api: k8s.ApiClient | None = None
        self._api_lock = threading.Lock()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._ctx_lock = threading.Lock()
        self._calls: list[WebhookCall] = []
        self._calls_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Python's ssl loads certificates from files only: they live here.
        self._own_certdir = certdir is None
        self._certdir = certdir or Path(tempfile.mkdtemp(prefix="injector-certs-"))
        self._certdir.mkdir(parents=True, exist_ok=True)
        self.port = 0

    # ---- call log -------------------------------------------------------------------
    def calls(self) -> list[WebhookCall]:
        """A copy of every call so far, oldest first."""
        with self._calls_lock:
            return list(self._calls)

    def injections(self, namespace: str | None = None) -> list[WebhookCall]:
        """The /inject calls (optionally of one namespace)."""
        return [
            c for c in self.calls() if c.path.startswith("/inject") and (namespace is None or c.namespace == namespace)
        ]

    def clear(self) -> None:
        with self._calls_lock:
            self._calls.clear()

    def _record(self, call: WebhookCall) -> None:
        with self._calls_lock:
            self._calls.append(call)

    # ---- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        default_ctx = self._context_for("istiod.istio-system.svc")

        def sni(sock: ssl.SSLSocket | ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
            # Remember what the client asked for, and present a certificate for it.
            sock.requested_name = name or ""  # type: ignore[union-attr]
            if name:
                sock.context = self._context_for(name)

        default_ctx.sni_callback = sni
        injector = self

        class Handler(_AdmissionHandler):
            owner = injector

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request: Any, client_address: Any) -> None:
                # TLS handshake here, in the connection's own thread.
                try:
                    tls = default_ctx.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    log.warning("injector TLS handshake failed: %s", e)
                    return
                try:
                    self.RequestHandlerClass(tls, client_address, self)
                finally:
                    tls.close()

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="stand-in-injector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._api is not None:
            self._api.close()
            self._api = None
        if self._own_certdir:
            shutil.rmtree(self._certdir, ignore_errors=True)

    # ---- helpers --------------------------------------------------------------------
    def _context_for(self, name: str) -> ssl.SSLContext:
        """A server context with a certificate for exactly `name` (issued once, cached)."""
        with self._ctx_lock:
            ctx = self._contexts.get(name)
            if ctx is None:
                cert, key = self._issuer.issue_serving(name)
                safe = "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in name)
                cert_path = self._certdir / f"{safe}.crt"
                key_path = self._certdir / f"{safe}.key"
                cert_path.write_bytes(cert)
                key_path.write_bytes(key)
                key_path.chmod(0o600)
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                ctx.load_cert_chain(cert_path, key_path)
                ctx.set_alpn_protocols(["http/1.1"])
                self._contexts[name] = ctx
            return ctx

    def api(self) -> k8s.ApiClient:
        """Admin client of the cluster (created on first use: the apiserver starts later)."""
        with self._api_lock:
            if self._api is None:
                self._api = k8s_config.new_client_from_config(config_file=str(self._kubeconfig))
            return self._api

    def revision_of(self, server_name: str) -> tuple[str, str, str]:
        """(namespace, service, revision) for SNI '<svc>.<ns>.svc'.

        The revision is the Service's ``istio.io/rev`` label (the istiod chart sets it on
        ``istiod-<rev>`` and on tag Services); failing that, parsed from the name.
        """
        parts = server_name.split(".")
        if len(parts) < 3 or parts[2] != "svc":
            return "", "", ""
        name, namespace = parts[0], parts[1]
        rev = ""
        try:
            svc = k8s.CoreV1Api(self.api()).read_namespaced_service(name, namespace, _request_timeout=5)
            rev = (svc.metadata.labels or {}).get("istio.io/rev", "")
        except Exception as e:  # an API hiccup must not fail the admission: parse the name
            log.warning("service %s/%s: %s", namespace, name, e)
        if not rev:
            if name == "istiod":
                rev = "default"
            elif name.startswith("istiod-"):
                rev = name[len("istiod-") :]
        return namespace, name, rev

    def proxy_image(self, namespace: str, revision: str) -> str:
        """``<hub>/proxyv2:<tag>`` of a revision, as its istiod would inject it.

        Read from the revision's injector ConfigMap (``values``: global.hub, global.tag,
        global.proxy.image, global.variant: the very values istiod's injection template
        uses); failing that, derived from the istiod Deployment's image.
        """
        core = k8s.CoreV1Api(self.api())
        names = [f"istio-sidecar-injector-{revision}"]
        if revision == "default":
            names.insert(0, "istio-sidecar-injector")
        for cm_name in names:
            try:
                cm = core.read_namespaced_config_map(cm_name, namespace, _request_timeout=5)
            except Exception:  # absent or unreachable: try the next source
                continue
            try:
                values = json.loads((cm.data or {}).get("values", "{}"))
            except json.JSONDecodeError:
                continue
            glob = values.get("global") or {}
            hub, tag = glob.get("hub"), glob.get("tag")
            name = (glob.get("proxy") or {}).get("image") or "proxyv2"
            if "/" in name:  # a full image reference, as the injection template allows
                return str(name)
            if hub and tag:
                variant = glob.get("variant")
                return f"{hub}/{name}:{tag}" + (f"-{variant}" if variant else "")
        deploy_names = [f"istiod-{revision}"] + (["istiod"] if revision == "default" else [])
        apps = k8s.AppsV1Api(self.api())
        for d_name in deploy_names:
            try:
                dep = apps.read_namespaced_deployment(d_name, namespace, _request_timeout=5)
            except Exception:  # absent or unreachable: try the next source
                continue
            for c in dep.spec.template.spec.containers or []:
                if c.name == "discovery" or "pilot" in (c.image or ""):
                    hub, tag = _split_image(c.image)
                    return f"{hub}/proxyv2:{tag}" if hub else f"proxyv2:{tag}"
        return f"{FALLBACK_HUB}/proxyv2:{FALLBACK_TAG}"

    @staticmethod
    def _proxy_container(revision: str, image: str) -> dict[str, Any]:
        return {
            "name": PROXY_CONTAINER,
            "image": image,
            "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
            "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
            "env": [
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "ISTIO_META_REVISION", "value": revision},
            ],
            "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}},
        }

    def inject_patch(self, pod: dict[str, Any], revision: str, image: str) -> list[dict[str, Any]]:
        """The JSONPatch istiod's injection would amount to, as far as this project can see."""
        meta = pod.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        labels = meta.get("labels") or {}
        containers = (pod.get("spec") or {}).get("containers") or []
        status = {
            "initContainers": [],
            "containers": [PROXY_CONTAINER],
            "volumes": [],
            "imagePullSecrets": None,
            "revision": revision,
        }
        new_annotations = {
            REV_ANNOTATION: revision,
            STATUS_ANNOTATION: json.dumps(status, separators=(",", ":")),
        }
        if containers and "kubectl.kubernetes.io/default-container" not in annotations:
            new_annotations["kubectl.kubernetes.io/default-container"] = containers[0]["name"]
        patch: list[dict[str, Any]] = []
        if "annotations" not in meta or meta["annotations"] is None:
            patch.append({"op": "add", "path": "/metadata/annotations", "value": new_annotations})
        else:
            for k, v in new_annotations.items():
                patch.append({"op": "add", "path": f"/metadata/annotations/{_escape(k)}", "value": v})
        new_labels = {"security.istio.io/tlsMode": "istio"}
        if "labels" not in meta or meta["labels"] is None:
            patch.append({"op": "add", "path": "/metadata/labels", "value": new_labels})
        else:
            for k, v in new_labels.items():
                if k not in labels:
                    patch.append({"op": "add", "path": f"/metadata/labels/{_escape(k)}", "value": v})
        existing = [i for i, c in enumerate(containers) if c.get("name") == PROXY_CONTAINER]
        if existing:
            # Gateway pods (gateway chart) bring their own `istio-proxy` with image "auto";
            # istiod's gateway template fills in the real image.
            patch.append({"op": "replace", "path": f"/spec/containers/{existing[0]}/image", "value": image})
        else:
            patch.append({"op": "add", "path": "/spec/containers/-", "value": self._proxy_container(revision, image)})
        return patch


class _AdmissionHandler(BaseHTTPRequestHandler):
    """Answers AdmissionReview v1 (and v1beta1) like istiod's webhook server."""

    owner: StandInInjector
    protocol_version = "HTTP/1.1"
    timeout = 120  # an idle keep-alive connection from the apiserver ends eventually

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("injector: " + format, *args)

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply(200, {"status": "ok"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            review = json.loads(self.rfile.read(length))
            req = review["request"]
        except (ValueError, KeyError, TypeError):
            self._reply(400, {"error": "expected an AdmissionReview"})
            return
        path = self.path.split("?", 1)[0]
        server_name = getattr(self.connection, "requested_name", "")
        namespace, service, revision = self.owner.revision_of(server_name)
        obj = req.get("object") or {}
        meta = obj.get("metadata") or {}
        response: dict[str, Any] = {"uid": req.get("uid", ""), "allowed": True}
        patched = False
        image = ""
        kind = (req.get("kind") or {}).get("kind", "")
        if path.startswith("/inject") and kind == "Pod" and req.get("operation") == "CREATE":
            annotations = meta.get("annotations") or {}
            if STATUS_ANNOTATION not in annotations:  # not injected yet (reinvocation)
                image = self.owner.proxy_image(namespace, revision)
                patch = self.owner.inject_patch(obj, revision, image)
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
                patched = True
        self.owner._record(
            WebhookCall(
                time=time.time(),
                path=path,
                server_name=server_name,
                service=f"{namespace}/{service}" if service else "",
                revision=revision,
                operation=req.get("operation", ""),
                kind=kind,
                namespace=req.get("namespace") or meta.get("namespace", ""),
                name=meta.get("name") or meta.get("generateName", "") or req.get("name", ""),
                patched=patched,
                proxy_image=image,
            )
        )
        self._reply(
            200,
            {
                "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
                "kind": "AdmissionReview",
                "response": response,
            },
        )
