"""Fleets end to end: three local control planes, three stacks of one project in one backend, rolled by
`python -m mesh fleet plan|up` (the real command, in its own process) in two waves: `c1`, then `c2` and `c3`
together.

The walk: the fleet installs revision `r1` everywhere; a canary upgrade (revision `r2` added, `shop` moved to it)
goes through all three; then the old revision is dropped while a workload in `c1`'s bound namespace never gets
Ready (it asks for a node that does not exist): `c1` is updated, its gate fails, and `c2`/`c3` are never touched.
The workload is fixed; a resume finds `c2` locked by another update, reports it and leaves the lock alone; once the
lock is gone, a resume skips the converged stacks and finishes.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes import client as k8s

from harness.control_plane import wait_for
from harness.fleet import LocalFleet
from harness.toolchain import Tools
from tests.e2e.cluster_objects import create_deployment, create_namespace, deployments_settled, pod_revisions

CLUSTERS = ("c1", "c2", "c3")
WORKLOADS = ("web", "api")
FLEET = {"waves": [["c1"], ["c2", "c3"]], "parallel": 2, "soakSeconds": 2}


def configure(fleet: LocalFleet, revisions: dict[str, str], bound_to: str) -> None:
    fleet.configure({"charts": fleet.charts(), "revisions": {r: {"version": v} for r, v in revisions.items()},
                     "tags": {"default": bound_to}, "namespaces": {"shop": bound_to},
                     "rollout": {"concurrency": 4, "timeoutSeconds": 180}})


def run(fleet: LocalFleet, action: str) -> subprocess.CompletedProcess[str]:
    done = fleet.run(action)
    print(done.stdout[-20000:], done.stderr[-5000:])
    return done


def shop_revisions(fleet: LocalFleet, name: str) -> set[str | None]:
    return set(pod_revisions(fleet.clusters[name].api(), "shop").values())


@pytest.fixture(scope="module")
def fleet(e2e_tools: Tools) -> Iterator[LocalFleet]:
    if e2e_tools.existing_kubeconfig is not None:
        pytest.skip(f"needs three control planes of its own; {e2e_tools.existing_kubeconfig} is one shared cluster")
    local = LocalFleet(e2e_tools, CLUSTERS)
    try:
        local.start()
        for cluster in local.clusters.values():
            create_namespace(cluster.api(), "shop")
            for w in WORKLOADS:
                create_deployment(cluster.api(), "shop", w, replicas=1)
        local.write_fleet(FLEET)
        yield local
    finally:
        local.stop()


def test_1_plan_then_install_in_waves(fleet: LocalFleet) -> None:
    configure(fleet, {"r1": "1.30.0"}, "r1")
    plan = run(fleet, "plan")
    assert plan.returncode == 0, plan.stdout
    for name in CLUSTERS:
        wave = 1 if name == "c1" else 2
        assert f"## `{name}` (wave {wave})" in plan.stdout
        row = next(line for line in plan.stdout.splitlines() if line.startswith(f"| {wave} | {name} |"))
        assert "to create" in row and row.endswith("| none |"), row
    assert "3 of 3 stack(s) change" in plan.stdout
    assert all(fleet.updates(n) == 0 for n in CLUSTERS), "plan changes nothing"

    up = run(fleet, "up")
    assert up.returncode == 0, up.stdout
    out = up.stdout
    assert "Fleet done: 3 stack(s) in 2 wave(s), every gate held." in out
    # Wave 2 starts only after wave 1's stack is updated, gated and soaked.
    assert out.index("- `c1`: updated") < out.index("soaking 2s") < out.index("### wave 2 (c2, c3)")
    assert out.index("### wave 2 (c2, c3)") < out.index("[c2] up:") and out.index("### wave 2") < out.index("[c3] up:")
    for name in CLUSTERS:
        assert fleet.istiod_revisions(name) == {"r1"}
        assert shop_revisions(fleet, name) == {"r1"}, f"{name}: shop restarted onto r1 by the MeshRollout"
        assert fleet.updates(name) == 1
        assert f"[{name}] after soak: gate data plane: passed: every pod of 1 bound namespace(s)" in out


def test_2_canary_upgrade_rolls_through_every_cluster(fleet: LocalFleet) -> None:
    configure(fleet, {"r1": "1.30.0", "r2": "1.31.0"}, "r2")
    plan = run(fleet, "plan")
    assert plan.returncode == 0, plan.stdout
    moving = [line for line in plan.stdout.splitlines() if line.startswith("- `shop`:")]
    assert len(moving) == 3 and all("rolling: restarts Deployment/" in line for line in moving), moving
    for name in CLUSTERS:
        row = next(line for line in plan.stdout.splitlines() if f"| {name} |" in line)
        assert row.split("|")[4].strip() == str(len(WORKLOADS)), f"{name}: the review's restart count: {row}"
    up = run(fleet, "up")
    assert up.returncode == 0, up.stdout
    for name in CLUSTERS:
        assert fleet.istiod_revisions(name) == {"r1", "r2"}
        assert shop_revisions(fleet, name) == {"r2"}
        assert fleet.updates(name) == 2
        assert f"[{name}] after soak: gate workloads ready: passed: {len(WORKLOADS)} workload(s)" in up.stdout


def test_3_a_failing_gate_in_wave_1_leaves_wave_2_untouched(fleet: LocalFleet) -> None:
    api = fleet.clusters["c1"].api()
    broken = {"metadata": {"name": "broken", "labels": {"app": "broken"}}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "broken"}},
        "template": {"metadata": {"labels": {"app": "broken"}}, "spec": {
            "nodeSelector": {"pool": "does-not-exist"},
            "containers": [{"name": "app", "image": "registry.example/app:1"}]}}}}
    k8s.AppsV1Api(api).create_namespaced_deployment("shop", broken)
    configure(fleet, {"r2": "1.31.0"}, "r2")  # the third PR: drop the old revision
    up = run(fleet, "up")
    assert up.returncode == 1, up.stdout
    out = up.stdout
    assert "Stopped at wave 1 (c1)." in out
    assert "- `c1` unhealthy: gate workloads ready: `shop/Deployment/broken`: 0/1 ready, 1 updated" in out
    assert "Untouched: c2, c3." in out and "resume with `python -m mesh fleet up --fleet" in out
    assert "soaking" not in out, "an unhealthy wave is not soaked"
    assert fleet.istiod_revisions("c1") == {"r2"} and fleet.updates("c1") == 3
    for name in ("c2", "c3"):
        assert fleet.istiod_revisions(name) == {"r1", "r2"}
        assert fleet.updates(name) == 2, f"{name} was touched"
        assert f"[{name}]" not in out


def lock(fleet: LocalFleet, name: str) -> Path:
    """A lock on the stack as another `pulumi up` holds it in this backend (the diy backend's own lock file)."""
    assert fleet.project is not None
    stacks = fleet.project.backend / ".pulumi" / "stacks"
    found = next(stacks.rglob(f"{name}.json"))
    qualified = found.relative_to(stacks).with_suffix("")  # <project>/<stack>
    path = fleet.project.backend / ".pulumi" / "locks" / "organization" / qualified / "other-update.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": 4242, "username": "release-bot", "hostname": "ci-runner-7",
                                "timestamp": datetime.now(UTC).isoformat()}))
    return path


def test_4_a_locked_stack_is_reported_not_broken(fleet: LocalFleet) -> None:
    k8s.AppsV1Api(fleet.clusters["c1"].api()).delete_namespaced_deployment("broken", "shop")
    wait_for("broken gone", lambda: deployments_settled(fleet.clusters["c1"].api(), "shop"))
    held = lock(fleet, "c2")
    up = run(fleet, "up")
    assert up.returncode == 1, up.stdout
    out = up.stdout
    assert "[c1] no changes: not updated, holding its gates" in out and fleet.updates("c1") == 3
    assert "- `c2` locked: the stack is currently locked by 1 lock(s)" in out and "release-bot@ci-runner-7" in out
    assert "never cancel it from here" in out
    assert held.exists(), "the other update's lock is left alone"
    assert fleet.updates("c2") == 2 and fleet.istiod_revisions("c2") == {"r1", "r2"}
    # c3 ran beside c2 (parallel: 2) and finished.
    assert "- `c3`: updated" in out and fleet.istiod_revisions("c3") == {"r2"}
    held.unlink()


def test_5_resume_skips_converged_stacks_and_finishes(fleet: LocalFleet) -> None:
    up = run(fleet, "up")
    assert up.returncode == 0, up.stdout
    out = up.stdout
    for name in ("c1", "c3"):
        assert f"[{name}] no changes: not updated, holding its gates" in out
    assert "- `c2`: updated" in out
    assert [fleet.updates(n) for n in CLUSTERS] == [3, 3, 3]
    for name in CLUSTERS:
        assert fleet.istiod_revisions(name) == {"r2"}
        assert shop_revisions(fleet, name) == {"r2"}
