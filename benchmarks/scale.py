"""What one `pulumi up` costs the API server on a small and on a large cluster, for the same move: does the cost
grow with what moves, or with what exists?

For each cluster size (`--clusters`, `pods/namespaces` each: by default 500 pods in 25 namespaces, then 10,000
pods in 500 namespaces), on a fresh local control plane of its own (harness/control_plane.py: KWOK nodes, so
pods cost no containers; a real istiod per revision):

* setup (not measured): the background, one Deployment per namespace holding the namespace's share of the pods
  (unbound namespaces, nothing the stack moves); the stack with revisions 1-30-0 and 1-31-0 and a tag `stable`
  on 1-30-0, `--moved` namespaces bound to `stable`, each with `--per-namespace` one-replica Deployments whose
  pods count as available `--ready-seconds` after ready (the technique of benchmarks/migration.py), settled on
  1-30-0;
* the measured step: `stable` moves to 1-31-0 and `pulumi up` runs. Every process of the stack (the CLI, the
  program, the Kubernetes provider, the dynamic providers) reaches the API server through a counting proxy on
  loopback (plain HTTP to the proxy, TLS with the admin certificate from it to the API server), which counts
  each request and the bytes of each response (headers and body, watch streams included) by client and by
  verb and resource; a sampler reads the resident memory of the CLI and its descendants from /proc every
  0.2 s and keeps the peak, in all and per process;
* the MeshRollout's own step is timed from the engine's events and compared with ceil(W/c) x R, W the moved
  workloads, c `--concurrency`, R `--ready-seconds`, and with ceil(W/c) x the cluster's own time per restart
  (a watch, not counted, sees each moved Deployment's new generation and its rollout complete: R plus what the
  control plane takes to replace the pod, which the program cannot shorten). The program's processes (the
  language host's Python and the dynamic providers) are reported apart from the engine and the Kubernetes
  provider.

The last lines compare the sizes: requests, bytes received and peak memory of the large cluster over the small
one (the goal: at most 1.2 x), and each per moved workload.

Run from the repository root: .venv/bin/python -m benchmarks.scale [--clusters 500/25,10000/500] [--moved 20]
[--per-namespace 5] [--concurrency 20] [--ready-seconds 15]

Measured figures: README, section Scale.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import math
import os
import platform
import re
import ssl
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from benchmarks.migration import NEW, OLD, ROLLOUT, StepTimes, create_deployments, stack_config
from harness.control_plane import ControlPlane, wait_for
from harness.mesh_stack import MeshStack
from harness.revision import wait_ready_for_pods
from harness.toolchain import locate_or_exit
from mesh import kube
from mesh.workloads import waiting_for, workload_from_object

IMAGE = "example.invalid/background:1"
PODS_PER_NODE = 100
"""KWOK nodes take 110 pods each; the background is spread over enough of them."""
PROGRAM = re.compile(r"python\S* -u (\S*pulumi-language-python-exec|-m pulumi\.dynamic)")
"""The program's processes under the CLI: the language host's Python running the program, the dynamic providers."""
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "te"}


@dataclass
class Counts:
    """Requests and response bytes, by client (its User-Agent's product) and by verb and resource."""

    requests: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    by_call: Counter[str] = field(default_factory=Counter)
    bytes_by_call: Counter[str] = field(default_factory=Counter)
    answered: list[tuple[float, str, str]] = field(default_factory=list)
    """(monotonic time its response began, client, call) of every request."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, agent: str, call: str, size: int, new_request: bool) -> None:
        with self.lock:
            self.received[agent] += size
            self.bytes_by_call[call] += size
            if new_request:
                self.requests[agent] += 1
                self.by_call[call] += 1
                self.answered.append((time.monotonic(), agent, call))

    def reset(self) -> None:
        with self.lock:
            for counter in (self.requests, self.received, self.by_call, self.bytes_by_call):
                counter.clear()
            self.answered.clear()

    def before(self, start: float, end: float, agent: str) -> str:
        """The client's requests answered between `start` and `end` (the step's start and its first patch)."""
        times = [t - start for t, a, _call in self.answered if a == agent and start <= t <= end]
        if not times:
            return f"no request of {agent} before it"
        return (f"{agent}'s first response {times[0]:.1f}s into the step, {len(times)} before the first patch, "
                f"the last at {times[-1]:.1f}s")


def call_of(method: str, path: str, query: str) -> str:
    """`LIST pods (namespaced)`, `WATCH deployments (cluster)`, `PATCH deployments`: what a request is."""
    parts = [p for p in path.split("/") if p]
    parts = parts[2:] if parts[:1] == ["api"] else parts[3:] if parts[:1] == ["apis"] else parts
    scope = "namespaced" if parts[:1] == ["namespaces"] and len(parts) > 2 else "cluster"
    if scope == "namespaced":
        parts = parts[2:]
    resource = parts[0] if parts else (path or "/")
    named = len(parts) != 1  # an object's own path, or discovery
    verb = method
    if method == "GET":
        verb = "WATCH" if "watch=true" in query.lower() or "watch=1" in query else "GET" if named else "LIST"
    return f"{verb} {resource} ({scope})"


class CountingProxy:
    """Plain HTTP on loopback in, TLS with the cluster's admin certificate out; counts what it passes back."""

    def __init__(self, kubeconfig: Path, workdir: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        upstream = urlparse(cluster["server"])
        self.host, self.port = upstream.hostname or "127.0.0.1", upstream.port or 443
        files = {}
        for key in ("certificate-authority-data", "client-certificate-data", "client-key-data"):
            files[key] = workdir / key
            files[key].write_bytes(base64.b64decode(cluster.get(key) or user.get(key)))
            files[key].chmod(0o600)
        self.context = ssl.create_default_context(cafile=str(files["certificate-authority-data"]))
        self.context.load_cert_chain(str(files["client-certificate-data"]), str(files["client-key-data"]))
        self.counts = Counts()
        self.local = threading.local()
        """This handler thread's upstream connection (one thread serves one client connection)."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.forward(self)

            def do_POST(self) -> None:
                outer.forward(self)

            def do_PUT(self) -> None:
                outer.forward(self)

            def do_PATCH(self) -> None:
                outer.forward(self)

            def do_DELETE(self) -> None:
                outer.forward(self)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.kubeconfig = workdir / "counted.kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "counted",
            "clusters": [{"name": "counted", "cluster": {"server": f"http://127.0.0.1:{self.server.server_address[1]}"}}],
            "users": [{"name": "counted", "user": {}}],
            "contexts": [{"name": "counted", "context": {"cluster": "counted", "user": "counted"}}],
        }))

    def forward(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        agent = (h.headers.get("User-Agent") or "-").split("/")[0].split(" ")[0]
        url = urlparse(h.path)
        call = call_of(h.command, url.path, url.query)
        upstream = None
        try:
            upstream, response = self.send(h, body)
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP
                       and k.lower() != "content-length"]
            h.send_response(response.status)
            for k, v in headers:
                h.send_header(k, v)
            size = sum(len(k) + len(v) + 4 for k, v in headers)
            if response.status in (204, 304):  # no body allowed
                response.read()
                h.send_header("Content-Length", "0")
                h.end_headers()
                self.counts.add(agent, call, size, True)
                return
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            first = True
            while True:
                data = response.read1(65536)
                self.counts.add(agent, call, size + len(data), first)
                first, size = False, 0
                if not data:
                    break
                h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                h.wfile.flush()
            h.wfile.write(b"0\r\n\r\n")
        except (OSError, http.client.HTTPException):
            h.close_connection = True
            if upstream is not None:
                upstream.close()
            self.local.connection = None

    def send(self, h: BaseHTTPRequestHandler, body: bytes | None) -> tuple[http.client.HTTPSConnection,
                                                                          http.client.HTTPResponse]:
        """The request on this client connection's own upstream connection, kept for its next request as a
        client's connection pool would (a new TLS connection per request would slow each request down); once
        more on a new connection when a kept one turns out closed."""
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
        for attempt in range(2):
            upstream = getattr(self.local, "connection", None)
            kept = upstream is not None
            if upstream is None:
                upstream = self.local.connection = http.client.HTTPSConnection(self.host, self.port,
                                                                               context=self.context)
            try:
                upstream.request(h.command, h.path, body, headers)
                return upstream, upstream.getresponse()
            except (OSError, http.client.HTTPException):
                upstream.close()
                self.local.connection = None
                if not kept or attempt:
                    raise
        raise AssertionError("unreachable")


class MemorySampler(threading.Thread):
    """Peak resident memory of the `pulumi` CLI processes under this one and all their descendants."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_total = 0
        self.peak_program = 0
        """The program's own processes: the language host's Python (the program) and the dynamic providers."""
        self.peak_by_process: Counter[str] = Counter()
        self.done = threading.Event()

    @staticmethod
    def _processes() -> dict[int, tuple[int, str, int]]:
        """pid -> (parent, name, resident bytes)."""
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                status = Path(f"/proc/{entry}/status").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            rss = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
            name = " ".join(Path(a.decode(errors="replace")).name for a in cmdline[:3] if a)[:60]
            if PROGRAM.search(b" ".join(cmdline[:4]).decode(errors="replace")):
                name = f"program: {name}"
            found[int(entry)] = (int(fields["PPid"]), name, rss)
        return found

    def sample(self) -> None:
        procs = self._processes()
        children: dict[int, list[int]] = {}
        for pid, (parent, _name, _rss) in procs.items():
            children.setdefault(parent, []).append(pid)
        roots = [pid for pid in children.get(os.getpid(), []) if procs[pid][1].split(" ")[0] == "pulumi"]
        total, program, stack = 0, 0, list(roots)
        while stack:
            pid = stack.pop()
            _parent, name, rss = procs[pid]
            total += rss
            program += rss if name.startswith("program: ") else 0
            key = name.split(" ")[0] if not name.startswith(("python", "program")) else name
            self.peak_by_process[key] = max(self.peak_by_process[key], rss)
            stack += children.get(pid, [])
        self.peak_total = max(self.peak_total, total)
        self.peak_program = max(self.peak_program, program)

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()


class RestartTimes(threading.Thread):
    """How long the cluster takes per restart: for each Deployment of the moved namespaces, from the first sight of
    its new generation (the MeshRollout's patch) to its rollout complete (`waiting_for`), watched with the admin
    client (not counted). What the MeshRollout's step cannot be faster than, whatever it reads."""

    def __init__(self, api: k8s.ApiClient, namespaces: list[str]) -> None:
        super().__init__(daemon=True)
        self.apps, self.namespaces = k8s.AppsV1Api(api), set(namespaces)
        listed = self.apps.list_deployment_for_all_namespaces()
        self.version = listed.metadata.resource_version
        self.generation = {(d.metadata.namespace, d.metadata.name): d.metadata.generation
                           for d in listed.items if d.metadata.namespace in self.namespaces}
        self.started: dict[tuple[str, str], float] = {}
        self.took: dict[tuple[str, str], float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            stream = k8s_watch.Watch().stream(self.apps.list_deployment_for_all_namespaces, timeout_seconds=5,
                                              resource_version=self.version)
            for event in stream:
                obj = event["raw_object"]
                self.version = obj["metadata"]["resourceVersion"]
                key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                if key[0] not in self.namespaces or key in self.took:
                    continue
                now = time.monotonic()
                if obj["metadata"]["generation"] > self.generation.get(key, 0):
                    self.started.setdefault(key, now)
                if key in self.started and waiting_for(workload_from_object("Deployment", obj)) is None:
                    self.took[key] = now - self.started[key]

    def median(self) -> float:
        return statistics.median(self.took.values()) if self.took else float("nan")

    def first_patches(self) -> list[float]:
        return sorted(self.started.values())

    def timeline(self, start: float, end: float, concurrency: int) -> str:
        """Where the step's time goes besides the cluster's restarts (`start`, `end`: the step's, monotonic): until
        the first patch, from a slot freeing to the next patch (the i-th restart after the first `concurrency`
        waits for the (i - concurrency)-th to complete), and after the last completes."""
        if not self.took:
            return "no restart seen"
        starts = self.first_patches()
        ends = sorted(self.started[k] + t for k, t in self.took.items())
        refills = [b - a for a, b in zip(ends, starts[concurrency:], strict=False)]
        return (f"first patch {starts[0] - start:.1f}s into the step, last {starts[-1] - start:.1f}s; a freed slot "
                f"refilled after {statistics.median(refills) if refills else float('nan'):.1f}s (median of "
                f"{len(refills)}); last restart complete {end - ends[-1]:.1f}s before the step ended")


def available(apps: k8s.AppsV1Api, prefix: str) -> tuple[int, int]:
    """(available, desired) replicas of the Deployments in namespaces starting with `prefix` (paged)."""
    have = want = 0
    for d in kube.list_objects(apps.list_deployment_for_all_namespaces):
        if d["metadata"]["namespace"].startswith(prefix):
            have += int((d.get("status") or {}).get("availableReplicas") or 0)
            want += int(d["spec"].get("replicas") or 0)
    return have, want


def moved_settled(api: k8s.ApiClient, namespaces: list[str], rev: str) -> bool:
    """Every Deployment of the moved namespaces complete, every live pod of them injected by `rev`."""
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    for ns in namespaces:
        if any(waiting_for(workload_from_object("Deployment", d))
               for d in kube.list_objects(apps.list_namespaced_deployment, namespace=ns)):
            return False
        pods = [p for p in kube.list_objects(core.list_namespaced_pod, namespace=ns)
                if not p["metadata"].get("deletionTimestamp")]
        if any((p["metadata"].get("annotations") or {}).get("istio.io/rev") != rev for p in pods):
            return False
    return True


@dataclass(frozen=True)
class Result:
    pods: int
    namespaces: int
    wall: float
    rollout: float
    requests: int
    received: int
    memory: int
    program_memory: int
    by_process: dict[str, int]
    by_call: list[tuple[str, int, int]]
    by_agent: list[tuple[str, int, int]]
    restart: float
    """The cluster's median time per restart, patch to rollout complete (`RestartTimes`)."""
    restarts: int
    timeline: str


def measure(args: argparse.Namespace, pods: int, spaces: int) -> Result:
    """One cluster size, on its own control plane: set up, then time and count the move."""
    tools = locate_or_exit()
    moved_pods = args.moved * args.per_namespace
    nodes = max(2, math.ceil((pods + 2 * moved_pods + 50) / PODS_PER_NODE))
    cluster = ControlPlane(tools, nodes=nodes)
    cluster.start()
    try:
        api = cluster.api()
        core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
        background = [f"bg-{i:03d}" for i in range(spaces)]
        moved = [f"mv-{i:03d}" for i in range(args.moved)]
        for ns in background + moved:
            core.create_namespace({"metadata": {"name": ns}})
        for i, ns in enumerate(background):
            share = pods // spaces + (1 if i < pods % spaces else 0)
            labels = {"app": "filler"}
            wait_for(f"ServiceAccount of {ns}", lambda ns=ns: bool(
                core.list_namespaced_service_account(ns, field_selector="metadata.name=default").items))
            apps.create_namespaced_deployment(ns, {"metadata": {"name": "filler"}, "spec": {
                "replicas": share, "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels},
                             "spec": {"containers": [{"name": "app", "image": IMAGE}]}}}})
        wait_for(f"{pods} background pods available", lambda: available(apps, "bg-") == (pods, pods),
                 timeout=3600, interval=5)
        timeout = 10 * args.ready_seconds + 120
        with tempfile.TemporaryDirectory() as workdir:
            proxy = CountingProxy(cluster.kubeconfig, Path(workdir))
            stack = MeshStack(tools, proxy.kubeconfig, Path(workdir) / "stack", name="scale")
            stack.write_config(stack_config(tools, moved, OLD, args.concurrency, timeout))
            stack.up()
            wait_ready_for_pods(cluster, (OLD, NEW), "stable", moved)
            for ns in moved:
                create_deployments(apps, ns, args.per_namespace, args.ready_seconds)
            wait_for("the moved namespaces settled on the old revision", lambda: moved_settled(api, moved, OLD), 900)
            print(f"  setup done ({pods} background pods in {spaces} namespaces, {nodes} KWOK nodes), load "
                  f"{os.getloadavg()[0]:.1f}", flush=True)

            stack.write_config(stack_config(tools, moved, NEW, args.concurrency, timeout))
            steps = StepTimes()
            sampler = MemorySampler()
            restarts = RestartTimes(api, moved)
            proxy.counts.reset()
            sampler.start()
            restarts.start()
            started = steps.origin = time.monotonic()
            stack.stack.up(on_output=stack.log.append, on_event=steps.record, color="never")
            wall = time.monotonic() - started
            sampler.done.set()
            restarts.done.set()
            sampler.join()
            restarts.join()
            assert moved_settled(api, moved, NEW), "not every pod moved"
            rollout_start, rollout_end = steps.spans[ROLLOUT]
            counts = proxy.counts
            by_call = sorted(((c, counts.by_call[c], counts.bytes_by_call[c]) for c in counts.bytes_by_call),
                             key=lambda x: -x[2])
            proxy.server.shutdown()
            by_agent = sorted(((a, counts.requests[a], counts.received[a]) for a in counts.received),
                              key=lambda x: -x[2])
            return Result(pods, spaces, wall, rollout_end - rollout_start, sum(counts.requests.values()),
                          sum(counts.received.values()), sampler.peak_total, sampler.peak_program,
                          dict(sampler.peak_by_process),
                          by_call, by_agent, restarts.median(), len(restarts.took),
                          restarts.timeline(started + rollout_start, started + rollout_end, args.concurrency)
                          + "; " + counts.before(started + rollout_start,
                                                 (restarts.first_patches() or [math.inf])[0], "OpenAPI-Generator"))
    finally:
        cluster.stop()


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", default="500/25,10000/500", help="pods/namespaces of each size, small first")
    parser.add_argument("--moved", type=int, default=20, help="namespaces the up moves")
    parser.add_argument("--per-namespace", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--ready-seconds", type=int, default=15, help="minReadySeconds of every moved pod")
    args = parser.parse_args(argv)
    sizes = [tuple(map(int, size.split("/"))) for size in args.clusters.split(",")]
    moved = args.moved * args.per_namespace
    lower = math.ceil(moved / args.concurrency) * args.ready_seconds
    print(f"{platform.node()}: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; the up moves {args.moved} "
          f"namespaces x {args.per_namespace} Deployments, concurrency {args.concurrency}, pods available "
          f"{args.ready_seconds}s after ready; lower bound ceil({moved}/{args.concurrency}) x {args.ready_seconds}s "
          f"= {lower}s", flush=True)
    results = []
    for pods, spaces in sizes:
        print(f"cluster of {pods} pods in {spaces} namespaces:", flush=True)
        r = measure(args, pods, spaces)
        results.append(r)
        waves = math.ceil(moved / args.concurrency)
        print(f"  up {r.wall:.1f}s; MeshRollout step {r.rollout:.1f}s = {r.rollout / lower:.2f} x lower bound; "
              f"the cluster's restart (patch to complete, median of {r.restarts}) {r.restart:.1f}s, so the step is "
              f"{ratio(r.rollout, waves * r.restart):.2f} x ceil(W/c) x that; "
              f"{r.requests} requests, {mib(r.received)} received ({r.requests / moved:.1f} requests and "
              f"{mib(r.received / moved)} per moved workload); peak memory {mib(r.memory)} in all "
              f"({mib(r.memory / moved)} per moved workload), the program's processes {mib(r.program_memory)}; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        print("  peak memory by process: " + ", ".join(
            f"{name} {mib(rss)}" for name, rss in sorted(r.by_process.items(), key=lambda x: -x[1])))
        print(f"  MeshRollout step: {r.timeline}")
        print("  by client: " + "; ".join(f"{agent}: {n} requests, {mib(size)}" for agent, n, size in r.by_agent))
        print("  most bytes: " + "; ".join(f"{call}: {n} requests, {mib(size)}" for call, n, size in r.by_call[:8]))
    small = results[0]
    for r in results[1:]:
        print(f"{r.pods} pods over {small.pods}: requests {ratio(r.requests, small.requests):.2f} x, bytes received "
              f"{ratio(r.received, small.received):.2f} x, peak memory {ratio(r.memory, small.memory):.2f} x (the "
              f"program's processes {ratio(r.program_memory, small.program_memory):.2f} x), MeshRollout step "
              f"{ratio(r.rollout, small.rollout):.2f} x, the cluster's restart {ratio(r.restart, small.restart):.2f} x "
              "(goal: at most 1.2 x)")
        for agent, n, size in r.by_agent:
            before = next(((m, b) for a, m, b in small.by_agent if a == agent), (0, 0))
            print(f"  {agent}: requests {n} vs {before[0]}, bytes {mib(size)} vs {mib(before[1])}")


if __name__ == "__main__":
    main()
