"""Where the tests, previews and benchmarks find their tools, at the versions of ``toolchain/versions``.

Nothing can be downloaded prebuilt on these machines, so every tool is built from Go
modules by the scripts in ``toolchain/`` into one versioned cache directory:

    ${ISTIO_MESH_E2E_CACHE:-~/.cache/istio-mesh-e2e}/
        pulumi-<ver>/bin/                    pulumi CLI + Python language host (build-pulumi.sh)
        pulumi-kubernetes-<ver>/bin/         pulumi-resource-kubernetes (build-pulumi.sh)
        kubernetes-<ver>/bin/                kube-apiserver, kube-controller-manager,
                                             kube-scheduler, kubectl (build-kube.sh)
        etcd-<ver>/bin/etcd                  (build-kube.sh)
        kwok-<ver>/bin/kwok, kwok-<ver>/stages/*.yaml   (build-kube.sh)
        istio-<ver>/charts/{base,istiod,gateway,cni}     (build-charts.sh)
        helm-v<ver>/bin/helm                 (build-helm.sh)

The manifest ``toolchain/versions`` names every version once; :func:`disagreements` lists the
files (go.mod, requirements.txt) that necessarily repeat one and do not agree (the build scripts'
``versions.sh`` checks the same before building).

A developer machine that already has tools may use them instead:
  * a ``pulumi`` on PATH is used when the cache has none;
  * ``ISTIO_MESH_E2E_KUBECONFIG=<path>`` points the tests at an existing cluster (kind, ...):
    then no control plane is started and kube/etcd/kwok need not be built. That cluster
    must route Istio's injection webhooks itself (the stand-in injector is not wired in).

``locate()`` returns a :class:`Tools` or the list of what is missing, each with the
command that builds it, so a test run can say exactly what to do.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLCHAIN = REPO_ROOT / "toolchain"
MANIFEST = TOOLCHAIN / "versions"


@dataclass(frozen=True)
class Pin:
    """One manifest line: a tool's version and the files that must pin it too (``<file>:<module>``)."""

    name: str
    version: str
    also_in: tuple[tuple[str, str], ...]


def read_manifest(path: Path = MANIFEST) -> list[Pin]:
    """The manifest's lines, in order (comments and blank lines skipped)."""
    pins = []
    for line in path.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            specs = tuple((file, module) for file, _, module in (w.partition(":") for w in words[2:]))
            pins.append(Pin(words[0], words[1], specs))
    return pins


def pinned_in(file: Path, module: str) -> str | None:
    """The version ``file`` pins for ``module``: a go.mod require line, or a requirements.txt ``==``."""
    if not file.is_file():
        return None
    if file.name == "go.mod":
        pattern = rf"^\s*(?:require\s+)?{re.escape(module)}\s+v(\S+)"
    else:
        pattern = rf"^{re.escape(module)}==([^\s;]+)"
    m = re.search(pattern, file.read_text(), re.MULTILINE)
    return m.group(1) if m else None


def disagreements(pins: list[Pin], toolchain: Path = TOOLCHAIN) -> list[str]:
    """Every file that does not pin what the manifest says, as a message naming both versions.

    An Istio version is served by a branch snapshot (a pseudo-version), so its line must name the
    wrapper module of its minor, ``charts/istio-<major.minor>/go.mod``, which must pin istio.io/istio.
    """
    problems = []
    for pin in pins:
        for file, module in pin.also_in:
            got = pinned_in(toolchain / file, module)
            if pin.name == "istio":
                minor = pin.version.rsplit(".", 1)[0]
                if file != f"charts/istio-{minor}/go.mod" or got is None:
                    problems.append(f"istio {pin.version} names {file}; it needs charts/istio-{minor}/go.mod "
                                    f"pinning istio.io/istio (charts/add-minor.sh makes it)")
            elif got != pin.version:
                problems.append(f"toolchain/versions pins {pin.name} {pin.version}, but toolchain/{file} pins "
                                f"{module} at {got or 'no version'}: make them agree")
    return problems


def _version(pins: list[Pin], name: str) -> str:
    for pin in pins:
        if pin.name == name:
            return pin.version
    raise RuntimeError(f"{MANIFEST} has no line for {name}")


_PINS = read_manifest()
# What the Go module proxy here serves, as build-pulumi.sh builds it (see the go.mod comments there).
PULUMI_VERSION = _version(_PINS, "pulumi")
PULUMI_KUBERNETES_VERSION = _version(_PINS, "pulumi-kubernetes")
KUBE_VERSION = _version(_PINS, "kubernetes")
ETCD_VERSION = _version(_PINS, "etcd")
KWOK_VERSION = _version(_PINS, "kwok")
HELM_VERSION = _version(_PINS, "helm")
# Istio versions whose charts build-charts.sh extracts (branch snapshots named like releases).
ISTIO_VERSIONS: tuple[str, ...] = tuple(p.version for p in _PINS if p.name == "istio")
# istiod (pilot-discovery) and istioctl are built once, from the newest minor's snapshot, stamped with
# the newest version name (build-istio.sh); that istiod serves every revision of the tests.
ISTIO_BINARIES_VERSION = max(ISTIO_VERSIONS, key=lambda v: tuple(int(x) for x in v.split(".")))

BUILD_ALL = "bash toolchain/build-all.sh"
KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
KWOK_STAGES = (
    "node-initialize.yaml",
    "node-heartbeat-with-lease.yaml",
    "pod-ready.yaml",
    "pod-complete.yaml",
    "pod-delete.yaml",
)
CHARTS = ("base", "istiod", "gateway", "cni")

ENV_CACHE = "ISTIO_MESH_E2E_CACHE"
ENV_KUBECONFIG = "ISTIO_MESH_E2E_KUBECONFIG"


def cache_dir() -> Path:
    """The build cache; same default as the toolchain scripts."""
    env = os.environ.get(ENV_CACHE)
    return Path(env) if env else Path.home() / ".cache" / "istio-mesh-e2e"


@dataclass(frozen=True)
class IstioCharts:
    """Chart directories of one Istio version, renderable offline (no chart dependencies)."""

    version: str
    base: Path
    istiod: Path
    gateway: Path
    cni: Path


@dataclass(frozen=True)
class Missing:
    """One tool that is not there, and the command that builds it."""

    what: str
    path: Path
    build_command: str

    def __str__(self) -> str:
        return f"{self.what}: {self.path} missing (build: {self.build_command})"


@dataclass(frozen=True)
class Tools:
    """Paths of every tool the e2e tests use."""

    cache: Path
    pulumi_bin_dir: Path
    kubernetes_plugin_dir: Path
    charts: dict[str, IstioCharts]
    # None when ISTIO_MESH_E2E_KUBECONFIG names an existing cluster.
    kube_bin_dir: Path | None = None
    etcd: Path | None = None
    kwok: Path | None = None
    kwok_stages: tuple[Path, ...] = field(default_factory=tuple)
    existing_kubeconfig: Path | None = None
    helm: Path | None = None
    """The Helm CLI, to install Istio the way the clusters this project takes over were."""
    istiod: Path | None = None
    """pilot-discovery: the real istiod the local control plane runs per installed revision."""
    istioctl: Path | None = None
    """istioctl of the same build: the independent checks (analyze, tag list, precheck) and installs."""

    def kube(self, name: str) -> Path:
        """Path of one Kubernetes binary (kube-apiserver, kubectl, ...)."""
        if self.kube_bin_dir is None:
            raise RuntimeError(f"no Kubernetes binaries: using an existing cluster ({ENV_KUBECONFIG})")
        return self.kube_bin_dir / name

    @property
    def kubectl(self) -> Path | None:
        """A kubectl matching the control plane (the machine's /usr/bin/kubectl is not trusted)."""
        return None if self.kube_bin_dir is None else self.kube_bin_dir / "kubectl"

    @property
    def pulumi(self) -> Path:
        return self.pulumi_bin_dir / "pulumi"

    def env_path(self) -> str:
        """PATH with the Pulumi CLI, its language host and the kubernetes plugin first."""
        parts = [str(self.pulumi_bin_dir), str(self.kubernetes_plugin_dir)]
        if self.kube_bin_dir is not None:
            parts.append(str(self.kube_bin_dir))
        return os.pathsep.join([*parts, os.environ.get("PATH", "")])


def _script(name: str, *args: str) -> str:
    return " ".join(["bash", f"toolchain/{name}", *args])


def _is_exe(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def _pulumi_dir(cache: Path, missing: list[Missing]) -> Path:
    built = cache / f"pulumi-{PULUMI_VERSION}" / "bin"
    if _is_exe(built / "pulumi"):
        return built
    on_path = shutil.which("pulumi")
    if on_path:
        return Path(on_path).resolve().parent
    missing.append(Missing("pulumi CLI", built / "pulumi", _script("build-pulumi.sh")))
    return built


def _stamped(chart_yaml: Path, version: str) -> bool:
    return chart_yaml.is_file() and f"\nversion: {version}\n" in f"\n{chart_yaml.read_text()}"


def locate(*, pulumi: bool = True, cluster: bool = True, charts: bool = True) -> Tools | list[Missing]:
    """Every tool's path, or what is missing among the parts asked for.

    The harness's own tests need no Pulumi, so they ask for ``pulumi=False``; paths of
    parts not asked for are filled in all the same (they may not exist).
    """
    cache = cache_dir()
    missing: list[Missing] = []
    pulumi_missing: list[Missing] = []

    pulumi_dir = _pulumi_dir(cache, pulumi_missing)
    plugin_dir = cache / f"pulumi-kubernetes-{PULUMI_KUBERNETES_VERSION}" / "bin"
    if not _is_exe(plugin_dir / "pulumi-resource-kubernetes"):
        on_path = shutil.which("pulumi-resource-kubernetes")
        if on_path:
            plugin_dir = Path(on_path).resolve().parent
        else:
            pulumi_missing.append(
                Missing(
                    "pulumi-resource-kubernetes",
                    plugin_dir / "pulumi-resource-kubernetes",
                    _script("build-pulumi.sh"),
                )
            )
    helm = cache / f"helm-v{HELM_VERSION}" / "bin" / "helm"
    if not _is_exe(helm):
        pulumi_missing.append(Missing("helm CLI", helm, _script("build-helm.sh")))
    if pulumi:
        missing += pulumi_missing

    chart_dirs: dict[str, IstioCharts] = {}
    for ver in ISTIO_VERSIONS:
        root = cache / f"istio-{ver}" / "charts"
        dirs = {c: root / c for c in CHARTS}
        # A chart counts only when stamped with its version, as releases are (older mirrors said 1.0.0).
        absent = [d for d in dirs.values() if not _stamped(d / "Chart.yaml", ver)]
        if absent and charts:
            missing.append(Missing(f"Istio {ver} charts", absent[0], _script("build-charts.sh")))
        chart_dirs[ver] = IstioCharts(ver, dirs["base"], dirs["istiod"], dirs["gateway"], dirs["cni"])

    existing = os.environ.get(ENV_KUBECONFIG)
    if existing:
        kubeconfig = Path(existing)
        if cluster and not kubeconfig.is_file():
            missing.append(Missing("existing cluster kubeconfig", kubeconfig, f"unset {ENV_KUBECONFIG}"))
        if missing:
            return missing
        return Tools(cache, pulumi_dir, plugin_dir, chart_dirs, existing_kubeconfig=kubeconfig, helm=helm)

    cluster_missing: list[Missing] = []
    kube_dir = cache / f"kubernetes-{KUBE_VERSION}" / "bin"
    for name in KUBE_BINARIES:
        if not _is_exe(kube_dir / name):
            cluster_missing.append(Missing(name, kube_dir / name, _script("build-kube.sh", "kube")))
    etcd = cache / f"etcd-{ETCD_VERSION}" / "bin" / "etcd"
    if not _is_exe(etcd):
        cluster_missing.append(Missing("etcd", etcd, _script("build-kube.sh", "etcd")))
    kwok_root = cache / f"kwok-{KWOK_VERSION}"
    kwok = kwok_root / "bin" / "kwok"
    if not _is_exe(kwok):
        cluster_missing.append(Missing("kwok", kwok, _script("build-kube.sh", "kwok")))
    stages = tuple(kwok_root / "stages" / s for s in KWOK_STAGES)
    absent_stages = [s for s in stages if not s.is_file()]
    if absent_stages:
        cluster_missing.append(Missing("kwok stages", absent_stages[0], _script("build-kube.sh", "kwok")))
    istio_bin = cache / f"istio-{ISTIO_BINARIES_VERSION}" / "bin"
    for name in ("pilot-discovery", "istioctl"):
        if not _is_exe(istio_bin / name):
            cluster_missing.append(Missing(name, istio_bin / name, _script("build-istio.sh")))
    if cluster:
        missing += cluster_missing

    if missing:
        return missing
    return Tools(
        cache,
        pulumi_dir,
        plugin_dir,
        chart_dirs,
        kube_bin_dir=kube_dir,
        etcd=etcd,
        kwok=kwok,
        kwok_stages=stages,
        helm=helm,
        istiod=istio_bin / "pilot-discovery",
        istioctl=istio_bin / "istioctl",
    )


def describe_missing(missing: list[Missing]) -> str:
    """One message for a skip or a failure: what is missing and how to build it all."""
    lines = [f"e2e tools missing; build them with `{BUILD_ALL}` (cache: {cache_dir()}):"]
    lines += [f"  - {m}" for m in missing]
    return "\n".join(lines)


def locate_or_exit(*, pulumi: bool = True, cluster: bool = True, charts: bool = True) -> Tools:
    """The tools for a command-line entry point (benchmarks): exits with `describe_missing`'s message."""
    found = locate(pulumi=pulumi, cluster=cluster, charts=charts)
    if isinstance(found, Tools):
        return found
    raise SystemExit(describe_missing(found))


def under_ci() -> bool:
    """CI=true: a missing tool is a failure, never a skip (CI builds every tool before the tests)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail_missing(message: str) -> NoReturn:
    """For a test that needs a built tool: skip on a machine without it, fail under CI."""
    import pytest  # the harness is imported outside pytest too (scripts, benchmarks)

    if under_ci():
        pytest.fail(message + "\n(CI=true: tests never skip for a missing tool under CI)", pytrace=False)
    pytest.skip(message)
