"""Calls by path (`mesh.kube.request` and its helpers) say to the API server what the generated API classes said:
the same paths, query parameters, patch types and errors; and no process of the program loads those classes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from mesh import kube
from tests.test_kube import TOKEN, kubeconfig

ROOT = Path(__file__).resolve().parent.parent


class Recorder:
    """An API server that records every request and answers from `objects` (path -> object), 404 otherwise."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.seen: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                outer.seen.append({"method": self.command, "path": url.path, "query": dict(parse_qsl(url.query)),
                                   "type": self.headers.get("Content-Type"), "body": body,
                                   "auth": self.headers.get("Authorization")})
                found = outer.objects.get(url.path)
                status, answer = (200, found) if found is not None else (404, {
                    "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
                    "message": f"{url.path} not found"})
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.answer()

            def do_PATCH(self) -> None:
                self.answer()

            def do_PUT(self) -> None:
                self.answer()

            def do_DELETE(self) -> None:
                self.answer()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def settings(self) -> kube.KubeSettings:
        url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return kube.KubeSettings(kubeconfig=yaml.safe_dump(kubeconfig(url)))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.server.shutdown()


def test_paths_of_core_and_group_kinds_in_and_across_namespaces() -> None:
    assert kube.path("Pod") == "/api/v1/pods"
    assert kube.path("Pod", "shop") == "/api/v1/namespaces/shop/pods"
    assert kube.path("Namespace", name="shop") == "/api/v1/namespaces/shop"
    assert kube.path("Deployment", "shop", "web") == "/apis/apps/v1/namespaces/shop/deployments/web"
    assert kube.path("MutatingWebhookConfiguration", name="istio-sidecar-injector") == (
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/istio-sidecar-injector")
    assert kube.path("ProxyConfig") == "/apis/networking.istio.io/v1beta1/proxyconfigs"


def test_list_and_watch_parameters_are_spelled_as_the_api_server_reads_them(recorder: Recorder) -> None:
    with kube.api_client(recorder.settings()) as api:
        call = kube.collection(api, "ReplicaSet")
        with pytest.raises(ApiException):  # 404 from the recorder: only the request matters here
            call(namespace="shop", watch=True, resource_version="41", allow_watch_bookmarks=True,
                 timeout_seconds=240, _continue=None, label_selector="app=web")
    seen = recorder.seen[0]
    assert (seen["method"], seen["path"], seen["auth"]) == ("GET", "/apis/apps/v1/namespaces/shop/replicasets",
                                                            f"Bearer {TOKEN}")
    assert seen["query"] == {"watch": "true", "resourceVersion": "41", "allowWatchBookmarks": "true",
                             "timeoutSeconds": "240", "labelSelector": "app=web"}


def test_patch_types_follow_the_body_and_apply_carries_its_manager(recorder: Recorder) -> None:
    recorder.objects["/api/v1/namespaces/shop"] = {"metadata": {"name": "shop", "labels": {"istio.io/rev": "b"}}}
    with kube.api_client(recorder.settings()) as api:
        merged = kube.patch(api, "Namespace", "shop", {"metadata": {"labels": {"istio.io/rev": "b"}}})
        kube.patch(api, "Namespace", "shop", [{"op": "remove", "path": "/metadata/labels/istio-injection"}],
                   dry_run="All")
        kube.patch(api, "Namespace", "shop", {"apiVersion": "v1", "kind": "Namespace"}, content_type=kube.APPLY,
                   field_manager="istio-mesh", force=True)
    assert merged["metadata"]["labels"] == {"istio.io/rev": "b"}  # the object as the server answered
    assert [(s["type"], s["query"]) for s in recorder.seen] == [
        (kube.STRATEGIC_MERGE, {}),
        (kube.JSON_PATCH, {"dryRun": "All"}),
        (kube.APPLY, {"fieldManager": "istio-mesh", "force": "true"}),
    ]
    assert recorder.seen[1]["body"] == [{"op": "remove", "path": "/metadata/labels/istio-injection"}]


def test_a_missing_object_is_none_for_find_and_an_api_exception_otherwise(recorder: Recorder) -> None:
    recorder.objects["/api/v1/namespaces/istio-system/services/istiod"] = {"metadata": {"name": "istiod"}}
    with kube.api_client(recorder.settings()) as api:
        assert kube.find(api, "Service", "istiod", "istio-system") == {"metadata": {"name": "istiod"}}
        assert kube.find(api, "Service", "gone", "istio-system") is None
        with pytest.raises(ApiException) as raised:
            kube.replace(api, "MutatingWebhookConfiguration", "gone", {"metadata": {"name": "gone"}})
    assert raised.value.status == 404
    assert "/mutatingwebhookconfigurations/gone not found" in (raised.value.body or "")
    assert [s["method"] for s in recorder.seen] == ["GET", "GET", "PUT"]


def test_no_process_of_the_program_loads_the_generated_api_classes(recorder: Recorder) -> None:
    """What makes `mesh review` fast to start: every module of the CLI and the providers imported, and a list, a
    read and the version asked for, without `kubernetes.client.api` (0.7 s of CPU to import) ever loaded."""
    recorder.objects["/version"] = {"gitVersion": "v1.34.1"}
    script = f"""
import sys, json, yaml
import mesh.__main__, mesh.fleet_run
import mesh.providers.rollout, mesh.providers.drain_guard, mesh.providers.namespace_labels
import mesh.providers.revisionless_injector, mesh.providers.external_revision, mesh.providers.legacy_label
import mesh.providers.version_gate
from mesh import kube
settings = kube.KubeSettings(kubeconfig={recorder.settings().kubeconfig!r})
with kube.api_client(settings) as api:
    print(kube.server_version(api))
    print(kube.find(api, "ConfigMap", "x", "istio-system"))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[:3] == ["kubernetes", "client", "api"])))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    version, missing, loaded = done.stdout.splitlines()
    assert (version, missing) == ("v1.34.1", "None")
    assert json.loads(loaded) == []
