"""Cluster settings and credentials: read at run time, never pickled into the state.

The last tests start Pulumi's real dynamic-provider host (`python -m pulumi.dynamic`, what the
engine runs as the `pulumi-python` plugin) from the program directory, hand it our pickled
provider and stack config over gRPC, and watch it reach a fake API server with the credentials
from that config.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dill
import grpc
import pulumi
import pytest
import yaml
from pulumi.dynamic import Config, ConfigureRequest
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from mesh import kube
from mesh.providers.drain_guard import DrainGuard, DrainGuardProvider
from mesh.providers.rollout import MeshRollout, MeshRolloutProvider, RolloutSettings, RolloutTarget

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-token-do-not-store"


class FakeApiServer:
    """Answers pod lists (two pages) and records the Authorization headers it saw."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.auth: list[str] = []
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.auth.append(self.headers.get("Authorization", ""))
                outer.paths.append(self.path)
                first = "continue=" not in self.path
                body = {
                    "kind": "PodList",
                    "metadata": {"continue": "page2"} if first else {},
                    "items": [] if first else outer.pods,
                }
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer([])
    yield server
    server.server.shutdown()


def kubeconfig(server: str, token: str = TOKEN, *, decoy: bool = False) -> dict[str, Any]:
    """A kubeconfig for `server`; with `decoy`, its current context points somewhere useless."""
    cfg: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "real", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "real", "context": {"cluster": "real", "user": "u"}}],
        "current-context": "real",
    }
    if decoy:
        cfg["clusters"].append({"name": "decoy", "cluster": {"server": "http://127.0.0.1:9"}})
        cfg["contexts"].append({"name": "decoy", "context": {"cluster": "decoy", "user": "u"}})
        cfg["current-context"] = "decoy"
    return cfg


def list_pods(settings: kube.KubeSettings) -> list[dict[str, Any]]:
    with kube.api_client(settings) as api:
        return list(kube.list_objects(kube.collection(api, "Pod")))


def test_stack_config_wins_over_environment() -> None:
    config = {kube.KUBECONFIG_KEY: "/from/config", kube.CONTEXT_KEY: "ctx"}
    settings = kube.settings_from(config.get, {"KUBECONFIG": "/from/env"})
    assert (settings.kubeconfig, settings.context) == ("/from/config", "ctx")
    settings = kube.settings_from({}.get, {"KUBECONFIG": "/from/env"})
    assert (settings.kubeconfig, settings.context) == ("/from/env", None)
    assert kube.settings_from({}.get, {}) == kube.KubeSettings()


def test_settings_repr_hides_kubeconfig_contents() -> None:
    settings = kube.KubeSettings(kubeconfig=yaml.safe_dump(kubeconfig("http://x")), context="real")
    assert settings.inline
    assert TOKEN not in repr(settings)
    assert not kube.KubeSettings(kubeconfig="/home/me/.kube/config").inline


def test_inline_kubeconfig_with_context_reaches_the_server_and_pages(apiserver: FakeApiServer) -> None:
    apiserver.pods = [{"metadata": {"name": "p"}}]
    inline = yaml.safe_dump(kubeconfig(apiserver.url, decoy=True))
    assert list_pods(kube.KubeSettings(kubeconfig=inline, context="real")) == apiserver.pods
    assert apiserver.auth == [f"Bearer {TOKEN}"] * 2
    assert "continue=page2" in apiserver.paths[1]


def test_kubeconfig_path_list_from_environment(apiserver: FakeApiServer, tmp_path: Path) -> None:
    """KUBECONFIG may list several files, merged like kubectl does."""
    cfg = kubeconfig(apiserver.url)
    users, rest = {"users": cfg.pop("users")}, cfg
    (tmp_path / "a").write_text(yaml.safe_dump(rest))
    (tmp_path / "b").write_text(yaml.safe_dump(users))
    settings = kube.settings_from({}.get, {"KUBECONFIG": f"{tmp_path / 'a'}:{tmp_path / 'b'}"})
    list_pods(settings)
    assert apiserver.auth[0] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("provider_class", [MeshRolloutProvider, DrainGuardProvider])
def test_configured_provider_pickles_without_credentials(provider_class: type, tmp_path: Path) -> None:
    provider = provider_class()
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig("https://cluster.example:6443")))
    raw = {kube.KUBECONFIG_KEY: yaml.safe_dump(kubeconfig("https://cluster.example:6443")), kube.CONTEXT_KEY: "real"}
    provider.configure(ConfigureRequest(Config(raw, "istio-mesh")))
    assert provider.kube_settings().context == "real"  # the settings did arrive

    pickled = base64.b64decode(serialize_provider(provider))
    assert TOKEN.encode() not in pickled
    assert b"cluster.example" not in pickled
    assert provider_class.__module__.encode() in pickled  # by reference: the class is imported
    restored = dill.loads(pickled)
    assert type(restored) is provider_class
    assert restored.kube_settings() == kube.KubeSettings(kubeconfig=os.environ.get("KUBECONFIG"))


def test_resources_register_a_provider_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real Resource constructors, with credentials in config and environment."""
    monkeypatch.setenv("KUBECONFIG", "/secret/path/kubeconfig")
    seen: dict[str, dict[str, Any]] = {}

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
            seen[args.name] = {"type": args.typ, **args.inputs}
            return f"{args.name}-id", args.inputs

        def call(self, _args: pulumi.runtime.MockCallArgs) -> dict:
            return {}

    pulumi.runtime.set_mocks(Mocks(), project="istio-mesh", stack="test", preview=False)
    pulumi.runtime.set_all_config({kube.KUBECONFIG_KEY: TOKEN})

    @pulumi.runtime.test
    def program() -> Any:
        target = RolloutTarget("shop", "b", RolloutSettings("docker.io/istio/proxyv2:1.31.0", "rolling"))
        rollout = MeshRollout("shop", targets=[target], concurrency=2, per_namespace=None, timeout_seconds=60)
        guard = DrainGuard("b-guard", revision="b", drain_timeout_seconds=0)
        return pulumi.Output.all(rollout.urn, guard.urn)

    program()
    assert seen["shop"]["type"] == "pulumi-python:dynamic/mesh:MeshRollout"
    assert seen["b-guard"]["type"] == "pulumi-python:dynamic/mesh:DrainGuard"
    for props in seen.values():
        pickled = base64.b64decode(props["__provider"]["value"])  # a secret, as the SDK makes it
        assert TOKEN.encode() not in pickled
        assert b"/secret/path" not in pickled
        assert len(pickled) < 200  # a reference to the class, nothing captured


# --- the real provider host --------------------------------------------------------------------


@pytest.fixture
def provider_host() -> Iterator[provider_pb2_grpc.ResourceProviderStub]:
    """`python -m pulumi.dynamic` started like the engine starts it: from the program directory,
    with no PYTHONPATH, so `mesh` must be importable from there."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KUBECONFIG")}
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.dynamic", "127.0.0.1:1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        port = proc.stdout.readline().decode().strip()  # type: ignore[union-attr]
        assert port.isdigit(), proc.stderr.read().decode()  # type: ignore[union-attr]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield provider_pb2_grpc.ResourceProviderStub(channel)
    finally:
        proc.kill()
        proc.wait()


def _struct(props: dict[str, Any]) -> Any:
    return asyncio.run(rpc.serialize_properties(props, {}))


def test_provider_host_loads_the_pickle_and_uses_stack_config(
    provider_host: provider_pb2_grpc.ResourceProviderStub, apiserver: FakeApiServer
) -> None:
    apiserver.pods = [
        {"metadata": {"namespace": "shop", "name": "web-1", "annotations": {"istio.io/rev": "b"}}, "status": {}}
    ]
    provider_host.Configure(
        provider_pb2.ConfigureRequest(
            args=_struct({kube.KUBECONFIG_KEY: yaml.safe_dump(kubeconfig(apiserver.url)), "istio-mesh:other": "x"})
        )
    )
    props = {"__provider": serialize_provider(DrainGuardProvider()), "revision": "b", "drain_timeout_seconds": 0}
    urn = "urn:pulumi:test::istio-mesh::pulumi-python:dynamic/mesh:DrainGuard::b-guard"
    created = provider_host.Create(provider_pb2.CreateRequest(urn=urn, properties=_struct(props)))
    assert created.id == "b"
    with pytest.raises(grpc.RpcError) as refused:
        provider_host.Delete(provider_pb2.DeleteRequest(id="b", urn=urn, properties=_struct(props)))
    assert "RevisionInUseError: revision b is still in use by 1 pod(s)" in refused.value.details()
    assert "shop: 1 pod(s) (web-1)" in refused.value.details()
    assert apiserver.auth and set(apiserver.auth) == {f"Bearer {TOKEN}"}

    apiserver.pods = []
    reads_before = len(apiserver.paths)
    provider_host.Delete(provider_pb2.DeleteRequest(id="b", urn=urn, properties=_struct(props)))  # lets go
    listed = [path.split("?")[0] for path in apiserver.paths[reads_before:]]
    assert listed == [p for p in ("/api/v1/pods", "/api/v1/namespaces", "/apis/apps/v1/deployments",
                                  "/apis/apps/v1/statefulsets", "/apis/apps/v1/daemonsets", "/apis/batch/v1/cronjobs")
                      for _ in range(2)], (
        "it listed the pods, the namespaces and every kind of workload again (both pages each) before letting go")


def test_no_settings_at_all_names_the_config_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(Exception, match="set stack config kubernetes:kubeconfig"):
        kube.api_client(kube.KubeSettings())
