"""Real istiod on the local control plane: one ``pilot-discovery discovery`` process per installed revision.

KWOK pods run no containers, so the istiod Deployments the program (or Helm, or ``istioctl install``)
creates would serve nothing. :class:`IstiodSupervisor` follows the cluster instead, as a kubelet would:
when a Deployment labelled ``app=istiod`` appears it starts ``pilot-discovery`` (built by
``toolchain/build-istio.sh``) configured from that Deployment's own pod template (its ``discovery``
container's args and env, as the revision's chart rendered them), restarts it when the template changes
(an in-place upgrade rolls istiod too) and stops it when the Deployment goes. istiod then does on its own
what it does in a pod: reads its mesh config and injection template from the revision's ConfigMaps,
creates the CA, patches ``caBundle`` into its webhooks, answers ``/inject`` and ``/validate``, runs its
tag watcher, leader election and the other controllers.

What differs from a pod, and why it does not matter for what the tests check:

* every listener is moved to its own loopback port (``--httpAddr``, ``--httpsAddr``, ...), so revisions
  run side by side; the API server reaches the webhook port through the Service (``connect_proxy.py``
  routes a Service to the istiod its selector names);
* ``KUBECONFIG`` is the harness's admin kubeconfig instead of the pod's service-account token (istiod's
  own RBAC is therefore not exercised; the chart's RBAC objects are still applied and diffed);
* ``JWT_POLICY=first-party-jwt``: there is no projected token file to read;
* files istiod writes relative to its working directory (``./var/run/secrets/istiod``, ``./etc/cacerts``)
  land in a directory of its own;
* field references resolve as in a pod (``metadata.name`` is ``<deployment>-local``), and
  ``GOMAXPROCS`` (a ``limits.cpu`` reference) is 1, so several istiods share the machine's cores;
* it starts once the revision's ConfigMaps exist (mesh config `istio-<rev>`, injector
  `istio-sidecar-injector-<rev>`): istiod reads them once at start and runs without injection for good when
  the injector's is missing ("Skipping sidecar injector, template not found": every webhook call then gets
  404). A real pod starts seconds after its Deployment (scheduling, image pull), long after the chart's
  ConfigMaps, created in the same apply; a local process starting within a tick could beat them;
* the pod's readiness is this process's: KWOK runs istiod's pods unready (``control_plane.py``'s stages)
  and the supervisor marks a pod Ready once the istiod started for its template answers ``/ready``, as a
  kubelet's readiness probe would; so a rollout of the chart (and Pulumi's wait for it) waits for the real
  istiod, and an in-place upgrade keeps the old pod until the new istiod serves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from harness.processes import Process, free_port, spawn

log = logging.getLogger(__name__)

ISTIOD_SELECTOR = "app=istiod"
CONTAINER = "discovery"
POLL_SECONDS = 0.5
# The listeners istiod opens, each moved to a loopback port of its own.
LISTENERS = ("httpAddr", "grpcAddr", "secureGRPCAddr", "monitoringAddr", "httpsAddr")


@dataclass
class Istiod:
    """One running istiod: the Deployment it stands for and where it listens."""

    namespace: str
    deployment: str
    revision: str
    ports: dict[str, int]
    fingerprint: str
    process: Process

    @property
    def webhook_port(self) -> int:
        """Where istiod serves /inject and /validate (port 15017 in a pod)."""
        return self.ports["httpsAddr"]

    def ready(self) -> bool:
        """istiod's own readiness (the probe a pod's kubelet would call)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['httpAddr']}/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False


def _container(deployment: dict[str, Any]) -> dict[str, Any] | None:
    containers = deployment["spec"]["template"]["spec"].get("containers") or []
    return next((c for c in containers if c.get("name") == CONTAINER), None)


def _ready(status: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def revision_of(deployment: dict[str, Any]) -> str:
    """The revision a Deployment's istiod serves: its REVISION env, as istiod reads it."""
    container = _container(deployment) or {}
    for env in container.get("env") or []:
        if env.get("name") == "REVISION" and env.get("value"):
            return str(env["value"])
    return (deployment["metadata"].get("labels") or {}).get("istio.io/rev") or "default"


def fingerprint(deployment: dict[str, Any]) -> str:
    """Changes when what istiod would run with changes (its container's image, args, env)."""
    container = _container(deployment) or {}
    picked = {k: container.get(k) for k in ("image", "args", "env")}
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


def environment(deployment: dict[str, Any], kubeconfig: Path) -> dict[str, str]:
    """The env of the Deployment's istiod container, resolved as a kubelet would for one pod."""
    meta = deployment["metadata"]
    pod_spec = deployment["spec"]["template"]["spec"]
    fields = {
        "metadata.name": f"{meta['name']}-local",
        "metadata.namespace": meta["namespace"],
        "spec.serviceAccountName": pod_spec.get("serviceAccountName") or "default",
        "spec.nodeName": "local",
        "status.podIP": "127.0.0.1",
    }
    env: dict[str, str] = {}
    for item in (_container(deployment) or {}).get("env") or []:
        name, source = item["name"], item.get("valueFrom") or {}
        if "value" in item or not source:  # an empty value is sent without the key
            env[name] = str(item.get("value", ""))
        elif "fieldRef" in source:
            env[name] = fields.get(source["fieldRef"].get("fieldPath", ""), "")
        elif "resourceFieldRef" in source:
            env[name] = "1"
        else:
            log.warning("istiod %s: env %s from %s is not resolved locally", meta["name"], name, sorted(source))
    env["KUBECONFIG"] = str(kubeconfig)
    env["JWT_POLICY"] = "first-party-jwt"
    return env


def arguments(deployment: dict[str, Any], ports: dict[str, int], kubeconfig: Path) -> list[str]:
    """The container's args, then every listener on its own loopback port (later flags win)."""
    args = [str(a) for a in (_container(deployment) or {}).get("args") or ["discovery"]]
    args += [f"--{flag}=127.0.0.1:{ports[flag]}" for flag in LISTENERS]
    args += [f"--ctrlz_port={ports['ctrlz']}", f"--kubeconfig={kubeconfig}"]
    return args


class IstiodSupervisor:
    """Starts, restarts and stops one local istiod per istiod Deployment in the cluster."""

    def __init__(self, binary: Path, kubeconfig: Path, workdir: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self._running: dict[tuple[str, str], Istiod] = {}
        self._surging: dict[tuple[str, str], Istiod] = {}  # replacements not ready yet
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._api: k8s.ApiClient | None = None
        self._generation = 0  # each process gets a working directory and log of its own

    # ---- queries --------------------------------------------------------------------
    def running(self) -> list[Istiod]:
        with self._lock:
            return list(self._running.values())

    def for_revision(self, namespace: str, revision: str) -> Istiod | None:
        """The istiod serving `revision` in `namespace` (what a Service selecting it reaches)."""
        return next((i for i in self.running() if i.namespace == namespace and i.revision == revision), None)

    def wait_serving(self, revision: str, namespace: str = "istio-system", timeout: float = 120.0) -> Istiod:
        """Wait until the revision's istiod runs and reports ready; raises with its log's tail if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            istiod = self.for_revision(namespace, revision)
            if istiod is not None and istiod.ready():
                return istiod
            time.sleep(0.5)
        istiod = self.for_revision(namespace, revision)
        tail = istiod.process.tail() if istiod else "(never started: no istiod Deployment for it)"
        raise AssertionError(f"istiod {namespace}/{revision} not serving after {timeout:.0f}s:\n{tail}")

    # ---- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="istiod-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for istiod in [*self._running.values(), *self._surging.values()]:
            istiod.process.kill()
        self._running.clear()
        self._surging.clear()
        if self._api is not None:
            self._api.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as e:  # the API server may be starting or busy: try again next tick
                log.debug("istiod supervisor: %s", e)
            self._stop.wait(POLL_SECONDS)

    def sync(self) -> None:
        """One reconcile: an istiod per Deployment with replicas, at its current template."""
        if self._api is None:
            self._api = k8s_config.new_client_from_config(config_file=str(self.kubeconfig))
        listed = k8s.AppsV1Api(self._api).list_deployment_for_all_namespaces(
            label_selector=ISTIOD_SELECTOR, _request_timeout=10
        )
        wanted: dict[tuple[str, str], dict[str, Any]] = {}
        for dep in self._api.sanitize_for_serialization(listed.items):
            if dep["spec"].get("replicas", 1) and _container(dep) and not dep["metadata"].get("deletionTimestamp"):
                wanted[(dep["metadata"]["namespace"], dep["metadata"]["name"])] = dep
        for key in [k for k in self._running if k not in wanted]:
            self._stop_one(key)
        for key in [k for k in self._surging if k not in wanted]:
            self._surging.pop(key).process.kill()
        for key, dep in wanted.items():
            self._reconcile(key, dep)
            self._report_readiness(dep)

    def _report_readiness(self, dep: dict[str, Any]) -> None:
        """Mark Ready the Deployment's pods whose template an istiod that answers `/ready` was started for."""
        assert self._api is not None
        core = k8s.CoreV1Api(self._api)
        meta, selector = dep["metadata"], dep["spec"]["selector"].get("matchLabels") or {}
        labels = ",".join(f"{k}={v}" for k, v in selector.items())
        pods = core.list_namespaced_pod(meta["namespace"], label_selector=labels, _request_timeout=10)
        for pod in self._api.sanitize_for_serialization(pods.items):
            status = pod.get("status") or {}
            if pod["metadata"].get("deletionTimestamp") or not status.get("podIP") or _ready(status):
                continue
            if not self._serving((meta["namespace"], meta["name"]), fingerprint({"spec": {"template": pod}})):
                continue
            containers = [{**c, "ready": True, "started": True} for c in status.get("containerStatuses") or []]
            core.patch_namespaced_pod_status(pod["metadata"]["name"], meta["namespace"], {"status": {
                "conditions": [{"type": t, "status": "True"} for t in ("Ready", "ContainersReady")],
                "containerStatuses": containers,
            }}, _request_timeout=10)

    def _serving(self, key: tuple[str, str], template: str) -> bool:
        """Whether an istiod started for this Deployment's template `template` (a fingerprint) answers /ready."""
        with self._lock:
            started = [i for k, i in (*self._running.items(), *self._surging.items()) if k == key]
        return any(i.fingerprint == template and i.ready() for i in started)

    def _reconcile(self, key: tuple[str, str], dep: dict[str, Any]) -> None:
        """Keep the current istiod while it matches the template; else surge a new one, and swap it in
        once it is ready (the old one keeps serving meanwhile, as under the chart's rolling update)."""
        wanted = fingerprint(dep)
        current, surge = self._running.get(key), self._surging.get(key)
        if current is not None and current.fingerprint == wanted and current.process.alive():
            if surge is not None:
                self._surging.pop(key).process.kill()
            return
        if surge is not None and (surge.fingerprint != wanted or not surge.process.alive()):
            self._surging.pop(key).process.kill()
            surge = None
        if current is None or not current.process.alive():
            started = self._surging.pop(key, None) or self._start_one(key, dep)
            if started is not None:
                self._swap_in(key, started)
        elif surge is None:
            started = self._start_one(key, dep)
            if started is not None:
                self._surging[key] = started
        elif surge.ready():
            self._swap_in(key, self._surging.pop(key))

    def _swap_in(self, key: tuple[str, str], istiod: Istiod) -> None:
        """Route to `istiod` from now on, then stop the one it replaces (in the background)."""
        with self._lock:
            old = self._running.get(key)
            self._running[key] = istiod
        if old is not None:
            self._retire(old)

    def _config_maps_ready(self, namespace: str, revision: str) -> bool:
        """Whether the ConfigMaps istiod reads at start exist (see the module doc)."""
        assert self._api is not None
        suffix = "" if revision == "default" else f"-{revision}"
        names = {f"istio{suffix}", f"istio-sidecar-injector{suffix}"}
        found = k8s.CoreV1Api(self._api).list_namespaced_config_map(namespace, _request_timeout=10).items
        return names <= {cm.metadata.name for cm in found}

    def _start_one(self, key: tuple[str, str], dep: dict[str, Any]) -> Istiod | None:
        namespace, name = key
        revision = revision_of(dep)
        if not self._config_maps_ready(namespace, revision):
            return None  # its ConfigMaps are still being created: next tick
        ports = {flag: free_port() for flag in (*LISTENERS, "ctrlz")}
        self._generation += 1
        cwd = self.workdir / f"{namespace}.{name}.{self._generation}"
        cwd.mkdir(parents=True)
        process = spawn(
            f"istiod-{namespace}-{name}-{self._generation}",
            [str(self.binary), *arguments(dep, ports, self.kubeconfig)],
            logs=self.workdir,
            cwd=cwd,
            env=environment(dep, self.kubeconfig),
        )
        istiod = Istiod(namespace, name, revision, ports, fingerprint(dep), process)
        log.info("istiod %s/%s (revision %s) started, webhook port %d", namespace, name, revision, istiod.webhook_port)
        return istiod

    def _stop_one(self, key: tuple[str, str]) -> None:
        with self._lock:
            istiod = self._running.pop(key, None)
        if istiod is not None:
            self._retire(istiod)

    def _retire(self, istiod: Istiod) -> None:
        threading.Thread(target=istiod.process.kill, name="istiod-stop", daemon=True).start()
