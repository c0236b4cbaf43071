"""A real, throwaway Kubernetes control plane on loopback only, for tests, previews and benchmarks.

Runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler (built by
``toolchain/build-kube.sh``) and KWOK, which fakes the nodes and moves pods to
Running/Ready without kubelets, so Deployments, StatefulSets and DaemonSets really roll out.
Admission is the real one: Istio's webhook configurations are called through the
apiserver's ``cluster`` egress (``connect_proxy.py``) and answered by real istiod processes, one per
installed revision (``istiod.py``); every pod create is recorded with the webhooks that changed it
(the apiserver's audit log, ``admission_log.py``).

Everything listens on 127.0.0.1 at free ports; the PKI (``pki.py``) is generated into a temp dir.
``stop()`` kills every process group it started (``processes.py``), also after a failed start.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from harness.admission_log import AdmissionLog
from harness.connect_proxy import ConnectProxy
from harness.istiod import IstiodSupervisor
from harness.pki import CertAuthority, KeyPair, pem_key
from harness.processes import Process, free_port, spawn
from harness.toolchain import Tools

SERVICE_CIDR = "10.96.0.0/16"  # never dialed: the egress proxy intercepts webhook dials
POD_CIDR = "10.244.0.1/16"  # KWOK's pod IPs; never dialed either
NODE_ANNOTATION = "kwok.x-k8s.io/node"
ISTIOD_APP = "istiod"  # the `app` label of istiod's pods (every istiod chart, and istioctl's)
ISTIOD_WEBHOOK_PORTS = (443, 15017)  # the istiod Services' webhook port, and the container port behind it
# The audit policy: every pod create with the pod as stored (which webhooks changed it, what istiod
# injected), who listed Events (an upstream behaviour the README names is pinned by it), nothing else.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        {"level": "RequestResponse", "verbs": ["create"], "resources": [{"group": "", "resources": ["pods"]}]},
        {"level": "Metadata", "verbs": ["list"], "resources": [{"group": "", "resources": ["events"]}]},
        {"level": "None"},
    ],
}

# kube-controller-manager controllers the tests rely on (workloads, namespaces, GC,
# service accounts and their tokens, endpoints). node-lifecycle is left out on purpose:
# on a busy 2-core machine a late KWOK heartbeat would taint nodes and evict pods.
CONTROLLERS = (
    "serviceaccount-token-controller",
    "serviceaccount-controller",
    "legacy-serviceaccount-token-cleaner-controller",
    "root-ca-certificate-publisher-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "replicationcontroller-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "disruption-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "pod-garbage-collector-controller",
    "resourcequota-controller",
    "clusterrole-aggregation-controller",
)


class ControlPlaneError(RuntimeError):
    """A component did not start or become ready; the message has its log's tail."""



class ControlPlane:
    """etcd + kube-apiserver + controller-manager + scheduler + KWOK, with a real istiod per revision.

    Usage::

        cp = ControlPlane(tools)
        cp.start()          # raises ControlPlaneError (with log tails) and cleans up on failure
        ... cp.kubeconfig, cp.admission.injections(), cp.istiod.running() ...
        cp.stop()
    """

    def __init__(
        self,
        tools: Tools,
        *,
        workdir: Path | None = None,
        nodes: int = 2,
        start_timeout: float = 180.0,
    ) -> None:
        if tools.kube_bin_dir is None or tools.etcd is None or tools.kwok is None or tools.istiod is None:
            raise ValueError("these tools have no control-plane binaries (existing cluster?)")
        self.tools = tools
        self.nodes = nodes
        self.start_timeout = start_timeout
        # Short path: the egress unix socket lives here (108-byte limit).
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="imesh-e2e-"))
        self._own_workdir = workdir is None
        self.pki_dir = self.workdir / "pki"
        self.logs_dir = self.workdir / "logs"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.egress_socket = self.workdir / "egress.sock"
        self.processes: list[Process] = []
        self.apiserver_url = ""
        self.ca: CertAuthority | None = None
        self.audit_log = self.workdir / "logs" / "audit.log"
        self.admission = AdmissionLog(self.audit_log)
        self.istiod = IstiodSupervisor(tools.istiod, self.kubeconfig, self.workdir / "istiod")
        self.proxy: ConnectProxy | None = None
        self._api: k8s.ApiClient | None = None
        self.started = False

    # ---- public -----------------------------------------------------------------------
    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop(keep_workdir=True)
            raise
        self.started = True

    def stop(self, keep_workdir: bool = False) -> None:
        """Stop every istiod, kill every started process (newest first), drop the workdir."""
        self.istiod.stop()
        for proc in reversed(self.processes):
            proc.kill()
        self.processes.clear()
        if self._api is not None:
            self._api.close()
            self._api = None
        if self.proxy is not None:
            self.proxy.stop()
        keep = keep_workdir or os.environ.get("ISTIO_MESH_E2E_KEEP_WORKDIR") == "1"
        if self._own_workdir and not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def api(self) -> k8s.ApiClient:
        """An admin API client (shared; do not close it)."""
        if self._api is None:
            self._api = k8s_config.new_client_from_config(config_file=str(self.kubeconfig))
        return self._api

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- start ------------------------------------------------------------------------
    def _start(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.start_timeout
        self.ca = ca = CertAuthority(self.pki_dir)
        api_port = free_port()
        self.apiserver_url = f"https://127.0.0.1:{api_port}"
        certs = self._write_pki(ca)
        for name, identity in (
            ("admin", "admin"),
            ("controller-manager", "kube-controller-manager"),
            ("scheduler", "kube-scheduler"),
        ):
            self._write_kubeconfig(self.workdir / f"{name}.kubeconfig", certs[identity])
        self.kubeconfig = self.workdir / "admin.kubeconfig"

        # The egress proxy first: the apiserver may call webhooks as soon as it is up.
        self.proxy = ConnectProxy(self.egress_socket, self.api, self._route)
        self.proxy.start()

        etcd = self._start_etcd()
        self._start_apiserver(api_port, certs, etcd)
        apiserver = self.processes[-1]
        self._wait(
            "kube-apiserver /readyz",
            lambda: self._get_ok(f"{self.apiserver_url}/readyz"),
            [etcd, apiserver],
            deadline,
        )

        kcm = self._start_controller_manager(certs)
        sched = self._start_scheduler()
        kwok = self._start_kwok()
        self._create_nodes()
        watched = [etcd, apiserver, kcm, sched, kwok]
        self._wait("KWOK nodes Ready", self._nodes_ready, watched, deadline)
        self._wait(
            "kube-controller-manager (default ServiceAccount)",
            self._default_sa_exists,
            watched,
            deadline,
        )
        self._wait(
            "kube-scheduler /healthz",
            lambda: self._get_ok(f"https://127.0.0.1:{self._sched_port}/healthz", verify=False),
            watched,
            deadline,
        )
        (self.workdir / "istiod").mkdir(exist_ok=True)
        self.istiod.start()

    def _route(self, service: k8s.V1Service, port: int) -> int | None:
        """Where a Service's port is served locally: an istiod Service's webhook port is the local
        istiod of the revision its selector names (as the Service's endpoints would be)."""
        selector = service.spec.selector or {}
        if selector.get("app") != "istiod" or port not in ISTIOD_WEBHOOK_PORTS:
            return None
        istiod = self.istiod.for_revision(service.metadata.namespace, selector.get("istio.io/rev", "default"))
        return None if istiod is None else istiod.webhook_port

    def _write_pki(self, ca: CertAuthority) -> dict[str, KeyPair]:
        certs = {
            "apiserver": ca.write(
                "apiserver",
                ca.issue(
                    "kube-apiserver",
                    dns=(
                        "localhost",
                        "kubernetes",
                        "kubernetes.default",
                        "kubernetes.default.svc",
                        "kubernetes.default.svc.cluster.local",
                    ),
                    ips=("127.0.0.1", str(ipaddress.ip_network(SERVICE_CIDR)[1])),
                    server=True,
                ),
            ),
            "admin": ca.write("admin", ca.issue("e2e-admin", orgs=("system:masters",), client=True)),
            "kube-controller-manager": ca.write(
                "kube-controller-manager",
                ca.issue("system:kube-controller-manager", client=True),
            ),
            "kube-scheduler": ca.write("kube-scheduler", ca.issue("system:kube-scheduler", client=True)),
        }
        sa_key = ec.generate_private_key(ec.SECP256R1())
        (self.pki_dir / "sa.key").write_bytes(pem_key(sa_key))
        (self.pki_dir / "sa.key").chmod(0o600)
        (self.pki_dir / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return certs

    def _write_kubeconfig(self, path: Path, pair: KeyPair) -> None:
        assert self.ca is not None

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "e2e",
                    "cluster": {
                        "server": self.apiserver_url,
                        "certificate-authority-data": b64(self.ca.cert_path),
                    },
                }
            ],
            "users": [
                {
                    "name": "e2e",
                    "user": {
                        "client-certificate-data": b64(pair.cert),
                        "client-key-data": b64(pair.key),
                    },
                }
            ],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
            "current-context": "e2e",
        }
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        proc = spawn(name, args, logs=self.logs_dir, cwd=self.workdir, env=env)
        self.processes.append(proc)
        return proc

    def _start_etcd(self) -> Process:
        assert self.tools.etcd is not None
        client, peer = free_port(), free_port()
        self._etcd_url = f"http://127.0.0.1:{client}"
        proc = self._spawn(
            "etcd",
            [
                str(self.tools.etcd),
                "--name=e2e",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self._etcd_url}",
                f"--advertise-client-urls={self._etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=e2e=http://127.0.0.1:{peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # throwaway data: speed over durability
                "--auto-compaction-retention=1",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
        )
        return proc

    def _start_apiserver(self, port: int, certs: dict[str, KeyPair], etcd: Process) -> None:
        self._wait(
            "etcd /health",
            lambda: self._get_ok(f"{self._etcd_url}/health"),
            [etcd],
            time.monotonic() + 60,
        )
        audit_policy = self.workdir / "audit-policy.yaml"
        audit_policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        egress = self.workdir / "egress-selector.yaml"
        egress.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "apiserver.k8s.io/v1beta1",
                    "kind": "EgressSelectorConfiguration",
                    "egressSelections": [
                        {
                            # Webhook/aggregated-API Services and kubelets: through the
                            # harness proxy. controlplane and etcd stay direct.
                            "name": "cluster",
                            "connection": {
                                "proxyProtocol": "HTTPConnect",
                                "transport": {"uds": {"udsName": str(self.egress_socket)}},
                            },
                        }
                    ],
                }
            )
        )
        assert self.ca is not None
        pki = self.pki_dir
        self._spawn(
            "kube-apiserver",
            [
                str(self.tools.kube("kube-apiserver")),
                f"--etcd-servers={self._etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                # Loopback is not a valid Endpoints address: do not write the `kubernetes`
                # Service's endpoints (nothing in the cluster dials them; pods are fake).
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={certs['apiserver'].cert}",
                f"--tls-private-key-file={certs['apiserver'].key}",
                f"--client-ca-file={self.ca.cert_path}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                # This plugin taints every new Node not-ready until node-lifecycle-controller
                # sees it Ready; that controller is not run (see CONTROLLERS), so KWOK nodes
                # are created untainted instead.
                "--disable-admission-plugins=TaintNodesByCondition",
                "--allow-privileged=true",
                f"--egress-selector-config-file={egress}",
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                "--audit-log-maxsize=0",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _start_controller_manager(self, certs: dict[str, KeyPair]) -> Process:
        assert self.ca is not None
        return self._spawn(
            "kube-controller-manager",
            [
                str(self.tools.kube("kube-controller-manager")),
                f"--kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={self.pki_dir / 'sa.key'}",
                f"--root-ca-file={self.ca.cert_path}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--v=1",
            ],
        )

    def _start_scheduler(self) -> Process:
        self._sched_port = free_port()
        return self._spawn(
            "kube-scheduler",
            [
                str(self.tools.kube("kube-scheduler")),
                f"--kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self._sched_port}",
                "--leader-elect=false",
                "--v=1",
            ],
        )

    def _kwok_stages(self) -> list[Path]:
        """KWOK's stages, with istiod's pods left unready: KWOK's `pod-ready` stage skips them, and
        `istiod-pod-running` runs them unready, so their readiness is the real istiod's, which the
        IstiodSupervisor reports as a kubelet's probe would (see istiod.py)."""
        stages = []
        for path in self.tools.kwok_stages:
            if path.name != "pod-ready.yaml":
                stages.append(path)
                continue
            stage = yaml.safe_load(path.read_text())
            istiod = json.loads(json.dumps(stage))
            stage["spec"]["selector"]["matchExpressions"].append(
                {"key": ".metadata.labels.app", "operator": "NotIn", "values": [ISTIOD_APP]})
            istiod["metadata"]["name"] = "istiod-pod-running"
            istiod["spec"]["selector"]["matchExpressions"].append(
                {"key": ".metadata.labels.app", "operator": "In", "values": [ISTIOD_APP]})
            template = istiod["spec"]["next"]["statusTemplate"]
            template = re.sub(r'status: "True"(\n\s*type: (Ready|ContainersReady)\n)', r'status: "False"\1', template)
            template = template.replace("ready: true", "ready: false")
            assert template.count('"False"') == 2, "KWOK's pod-ready stage changed shape"
            istiod["spec"]["next"]["statusTemplate"] = template
            for name, body in (("pod-ready.yaml", stage), ("istiod-pod-running.yaml", istiod)):
                (self.workdir / name).write_text(yaml.safe_dump(body, sort_keys=False))
                stages.append(self.workdir / name)
        return stages

    def _start_kwok(self) -> Process:
        assert self.tools.kwok is not None
        return self._spawn(
            "kwok",
            [
                str(self.tools.kwok),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={','.join(str(s) for s in self._kwok_stages())}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
                f"--cidr={POD_CIDR}",
                "--node-ip=10.240.0.1",  # default address; nodes bring their own (see _create_nodes)
                "--node-lease-duration-seconds=40",
            ],
            # KWOK reads ~/.kwok/kwok.yaml when it exists: keep it to our config only.
            env={"HOME": str(self.workdir)},
        )

    def _create_nodes(self) -> None:
        core = k8s.CoreV1Api(self.api())
        for i in range(self.nodes):
            name = f"kwok-node-{i}"
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {
                        NODE_ANNOTATION: "fake",
                        "node.alpha.kubernetes.io/ttl": "0",
                    },
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                },
                # No taints: DaemonSets schedule on every node without tolerations.
                "spec": {},
                # Nodes may carry status on create; KWOK keeps addresses it finds. Reported
                # only, never dialed (the egress proxy refuses kubelet dials).
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": f"10.240.0.{i + 1}"},
                        {"type": "Hostname", "address": name},
                    ]
                },
            }
            try:
                core.create_node(body)
            except ApiException as e:
                if e.status != 409:
                    raise

    # ---- readiness --------------------------------------------------------------------
    def _ssl_context(self, verify: bool = True) -> ssl.SSLContext:
        if not verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        assert self.ca is not None
        ctx = ssl.create_default_context(cafile=str(self.ca.cert_path))
        ctx.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        return ctx

    def _get_ok(self, url: str, verify: bool = True) -> bool:
        ctx = self._ssl_context(verify) if url.startswith("https") else None
        try:
            with urllib.request.urlopen(url, timeout=3, context=ctx) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def _nodes_ready(self) -> bool:
        nodes = k8s.CoreV1Api(self.api()).list_node(_request_timeout=5).items
        ready = [n for n in nodes if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])]
        return len(ready) >= self.nodes

    def _default_sa_exists(self) -> bool:
        try:
            k8s.CoreV1Api(self.api()).read_namespaced_service_account("default", "default", _request_timeout=5)
            return True
        except ApiException:
            return False

    def _wait(
        self,
        what: str,
        check: Callable[[], bool],
        watched: list[Process],
        deadline: float,
    ) -> None:
        """Poll `check` until true; fail fast (with the log tail) if a watched process dies."""
        last_error = ""
        while True:
            for p in watched:
                if not p.alive():
                    raise ControlPlaneError(
                        f"{p.name} exited with code {p.popen.returncode} while waiting for "
                        f"{what}; last log lines ({p.log}):\n{p.tail()}"
                    )
            try:
                if check():
                    return
            except Exception as e:
                last_error = f"{type(e).__name__}: {e}"
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {p.name} ({p.log}):\n{p.tail(20)}" for p in watched)
                raise ControlPlaneError(
                    f"timed out waiting for {what}"
                    + (f" (last error: {last_error})" if last_error else "")
                    + f"\n{tails}"
                )
            time.sleep(0.5)

    def describe(self) -> str:
        """One line per component, for failure messages."""
        return json.dumps(
            {
                "apiserver": self.apiserver_url,
                "kubeconfig": str(self.kubeconfig),
                "logs": str(self.logs_dir),
                "processes": {p.name: p.popen.pid for p in self.processes},
            }
        )


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120.0, interval: float = 0.5) -> None:
    """Poll `check` until it holds; tests use it to wait for the cluster to converge."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class KubeCluster:
    """What e2e tests get: a cluster to talk to, its pod admissions and its istiods (own control plane)."""

    kubeconfig: Path
    tools: Tools
    control_plane: ControlPlane | None
    _api: k8s.ApiClient | None = None

    def api(self) -> k8s.ApiClient:
        """A shared admin API client."""
        if self._api is None:
            self._api = k8s_config.new_client_from_config(config_file=str(self.kubeconfig))
        return self._api

    @property
    def admission(self) -> AdmissionLog | None:
        """Every pod create and the webhooks that changed it (None on an existing cluster)."""
        return None if self.control_plane is None else self.control_plane.admission

    @property
    def istiod(self) -> IstiodSupervisor | None:
        """The local istiod processes (None on an existing cluster, which runs its own)."""
        return None if self.control_plane is None else self.control_plane.istiod

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (Pulumi, kubectl) aimed at this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": self.tools.env_path()}

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the kubectl built with the control plane (never the machine's own)."""
        kubectl = self.tools.kubectl or "kubectl"
        return subprocess.run(
            [str(kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )
