"""pytest wiring of the e2e harness: the `e2e` marker, the tools, and the `kube_cluster` fixture.

`kube_cluster` (session scope) starts a real local control plane (etcd, kube-apiserver,
controller-manager, scheduler, KWOK nodes; see ``harness/control_plane.py``) with a real istiod for
every installed revision (``harness/istiod.py``), and yields a :class:`KubeCluster`:

    def test_something(kube_cluster):
        api = kube_cluster.api()                  # kubernetes.client.ApiClient (admin)
        kube_cluster.kubeconfig                   # admin kubeconfig path, for Pulumi/kubectl
        kube_cluster.admission.injections("ns")   # pod creates an injector was called for (audit log)
        kube_cluster.istiod.wait_serving("1-31-0")

Tools come from ``bash toolchain/build-all.sh`` (cached under
~/.cache/istio-mesh-e2e). Missing tools skip the e2e tests with that command in the
message, except under CI (CI=true), where they fail: CI must never silently skip.
``ISTIO_MESH_E2E_KUBECONFIG=<path>`` uses an existing cluster instead of starting one
(then ``admission`` and ``istiod`` are None: that cluster runs its own istiod).
``ISTIO_MESH_E2E_KEEP_WORKDIR=1`` keeps the control plane's temp dir (logs, PKI) after the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.control_plane import ControlPlane, KubeCluster
from harness.toolchain import BUILD_ALL, Missing, Tools, describe_missing, locate, under_ci

E2E_DIR = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: end-to-end test against a real local Kubernetes control plane "
        f"(tools: {BUILD_ALL})",
    )


LONGEST_FIRST = ("test_fleet.py", "test_upgrade.py", "test_in_place_upgrade.py", "test_external_revision.py")
"""The longest e2e files, started first: `scripts/test` spreads files over two pytest-xdist workers, and
the whole run is shortest when the longest file does not start last."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test in this folder is an e2e test (`-m "not e2e"` deselects them all); the longest files
    come first (a stable sort: tests keep their order within a file)."""
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)

    def rank(item: pytest.Item) -> int:
        name = Path(str(item.fspath)).name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


def _tools_or_skip(*, pulumi: bool) -> Tools:
    found = locate(pulumi=pulumi)
    if isinstance(found, Tools):
        return found
    missing: list[Missing] = found
    message = describe_missing(missing)
    if under_ci():
        pytest.fail(message + "\n(CI=true: e2e tests never skip under CI)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def e2e_tools() -> Tools:
    """Every tool, Pulumi included (for tests that run the Pulumi program)."""
    return _tools_or_skip(pulumi=True)


def _own_cluster(tools: Tools) -> Iterator[KubeCluster]:
    cp = ControlPlane(tools)
    cp.start()
    cluster = KubeCluster(cp.kubeconfig, tools, cp)
    try:
        yield cluster
    finally:
        if cluster._api is not None:
            cluster._api.close()
        cp.stop()


@pytest.fixture(scope="module")
def pristine_cluster() -> Iterator[KubeCluster]:
    """A cluster of the module's own, for tests that need one no other test has installed Istio into."""
    tools = _tools_or_skip(pulumi=False)
    if tools.existing_kubeconfig is not None:
        pytest.skip(f"needs a cluster of its own; {tools.existing_kubeconfig} is shared")
    yield from _own_cluster(tools)


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """A running cluster for the whole session (started once, torn down at the end)."""
    tools = _tools_or_skip(pulumi=False)
    if tools.existing_kubeconfig is not None:
        yield KubeCluster(tools.existing_kubeconfig, tools, None)
        return
    yield from _own_cluster(tools)
