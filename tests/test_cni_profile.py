"""`profile` and `cni`: chart values, validation messages, and what a preview registers for each profile."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from harness.simulation import Registration, diff, simulate
from harness.toolchain import ISTIO_VERSIONS, cache_dir, skip_or_fail_missing
from mesh.charts import base_values, cni_values, gateway_values, istiod_values
from mesh.platform import CONFIGURATION_PROFILES, PLATFORMS, cni_namespace
from mesh.spec import load_spec
from mesh.validation import validate
from tests.test_upgrade_walk import (
    BINDINGS,
    CHART,
    GATEWAY,
    LABELS,
    NAMESPACE_LABELS,
    REVISION,
    STEADY,
    WALK,
    k,
)

CNI = "istio-mesh:index:IstioCNI"
PRIVILEGES = "istio-mesh:index:PlatformPrivileges"
NAD = "kubernetes:k8s.cni.cncf.io/v1:NetworkAttachmentDefinition"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"

OPENSHIFT = {"profile": "openshift", "cni": {"enabled": True}}
CNI_CHART = k((CNI, "istio-cni"), (CHART, "istio-cni"))


def with_(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**copy.deepcopy(config), **extra}


def spec_of(**extra: Any) -> Any:
    return load_spec({"revisions": {"1-30-2": {"version": "1.30.2"}, "1-31-0": {"version": "1.31.0"}}, **extra})


def messages(**extra: Any) -> list[str]:
    return [str(e) for e in validate(spec_of(**extra))]


# --- values -------------------------------------------------------------------------------------------


def test_unset_profile_and_cni_leave_every_chart_values_as_before() -> None:
    spec = load_spec(STEADY)
    assert "platform" not in base_values(spec)["global"]
    assert "pilot" not in istiod_values(spec, "1-30-2")
    assert "platform" not in istiod_values(spec, "1-30-2")["global"]
    assert "global" not in gateway_values(spec, spec.gateways["ingress"])


def test_openshift_reaches_every_chart_as_global_platform_and_cni_turns_on_pilot_cni() -> None:
    spec = spec_of(hub="mirror.example/istio", gateways={"in": {"namespace": "istio-ingress", "revision": "1-31-0"}},
                   **OPENSHIFT)
    assert base_values(spec)["global"] == {"istioNamespace": "istio-system", "platform": "openshift"}
    istiod = istiod_values(spec, "1-30-2")
    assert istiod["global"]["platform"] == "openshift" and "profile" not in istiod
    assert istiod["pilot"] == {"cni": {"enabled": True}}
    assert gateway_values(spec, spec.gateways["in"])["global"] == {"platform": "openshift"}
    # istio-cni follows the newest revision (as base does), from the configured hub.
    assert cni_values(spec) == {"global": {"hub": "mirror.example/istio", "tag": "1.31.0", "platform": "openshift"}}
    assert cni_namespace(spec) == "kube-system"
    assert cni_namespace(spec_of(cni={"enabled": True})) == "istio-system"


def test_cni_values_merge_over_the_programs_and_a_revision_may_keep_its_own_pilot_values() -> None:
    spec = spec_of(cni={"enabled": True, "values": {"cniBinDir": "/opt/bin", "global": {"logAsJson": True}}},
                   revisions={"r": {"version": "1.30.2", "values": {"pilot": {"cni": {"provider": "default"}}}}})
    assert cni_values(spec) == {"cniBinDir": "/opt/bin",
                                "global": {"hub": "docker.io/istio", "tag": "1.30.2", "logAsJson": True}}
    assert istiod_values(spec, "r")["pilot"] == {"cni": {"enabled": True, "provider": "default"}}


@pytest.mark.parametrize("version", ISTIO_VERSIONS)
def test_the_platforms_offered_are_the_ones_every_mirrored_chart_ships(version: str) -> None:
    """Compared with the charts themselves: `files/profile-platform-<p>.yaml` in base, istiod, gateway and cni."""
    root = cache_dir() / f"istio-{version}" / "charts"
    if not (root / "cni" / "Chart.yaml").is_file():
        skip_or_fail_missing(f"no chart mirror at {root} (bash toolchain/build-charts.sh)")
    for chart in ("base", "istiod", "gateway", "cni"):
        files = {p.name for p in (root / chart / "files").glob("profile-*.yaml")}
        shipped = {f.removeprefix("profile-platform-").removesuffix(".yaml") for f in files if "platform-" in f}
        assert shipped == set(PLATFORMS), chart
        configuration = {f.removeprefix("profile-").removesuffix(".yaml") for f in files
                         if "platform-" not in f and "compatibility-version" not in f}
        assert configuration == set(CONFIGURATION_PROFILES), chart
        # No profile-openshift.yaml: `profile: openshift` would fail to render ("unknown profile").
        assert "profile-openshift.yaml" not in files


# --- validation -----------------------------------------------------------------------------------------


def test_an_unknown_profile_lists_the_platforms_and_suggests_the_closest() -> None:
    assert messages(profile="openshfit", cni={"enabled": True}) == [
        'istio-mesh:profile: "openshfit" is not a platform profile the Istio charts ship: must be exactly one of '
        "gke, k3d, k3s, microk8s, minikube, openshift, or remove the key: did you mean openshift?"
    ]


def test_a_configuration_profile_is_refused_as_one() -> None:
    [message] = messages(profile="ambient")
    assert message.startswith('istio-mesh:profile: "ambient" is one of Istio\'s configuration profiles')
    assert "must be exactly one of gke, k3d, k3s, microk8s, minikube, openshift" in message


def test_openshift_without_cni_names_cni_enabled() -> None:
    [message] = messages(profile="openshift")
    assert message.startswith("istio-mesh:cni.enabled: is false, but profile openshift turns on pilot.cni.enabled")
    assert message.endswith("set cni.enabled to true")
    assert messages(profile="gke") == [], "other platforms work with or without CNI"


@pytest.mark.parametrize("values,key", [
    ({"pilot": {"cni": {"enabled": True}}}, "pilot.cni.enabled"),
    ({"istio_cni": {"enabled": True}}, "istio_cni.enabled"),
])
def test_a_revision_that_needs_cni_while_cni_is_off_names_its_value(values: dict[str, Any], key: str) -> None:
    spec = {"revisions": {"1-30-2": {"version": "1.30.2", "values": values}}}
    assert [str(e) for e in validate(load_spec(spec))] == [
        f"istio-mesh:revisions.1-30-2.values.{key}: is true, so this revision's pods get no istio-init and rely on "
        "the istio-cni node agent, but cni.enabled is false: set cni.enabled to true (which also sets this value), "
        "or remove it"
    ]
    assert validate(load_spec({**spec, "cni": {"enabled": True}})) == []


def test_a_profile_on_a_revision_older_than_platform_profiles_names_the_revision() -> None:
    spec = load_spec({"revisions": {"old": {"version": "1.23.4"}}, **OPENSHIFT})
    [message] = [str(e) for e in validate(spec)]
    assert message.startswith("istio-mesh:revisions.old.version: is 1.23.4, whose charts have no platform profiles")


def test_cni_values_the_program_sets_are_refused() -> None:
    assert messages(cni={"enabled": True, "values": {"global": {"platform": "gke", "tag": "1.0.0"}}}) == [
        f"istio-mesh:cni.values.global.{v}: is set by the program (istio-cni runs the newest revision's version, on "
        "the platform named by profile): remove it from values and change revisions or profile instead"
        for v in ("tag", "platform")
    ]


def test_cni_enabled_must_be_a_boolean() -> None:
    from mesh.spec import SpecError

    with pytest.raises(SpecError) as err:
        spec_of(cni={"enabled": "maybe"})
    assert [str(e) for e in err.value.errors] == [
        'istio-mesh:cni.enabled: must be true or false, but YAML read the text "maybe"'
    ]


# --- simulated previews ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_profile() -> dict[str, Registration]:
    return simulate(STEADY)


@pytest.fixture(scope="module")
def openshift() -> dict[str, Registration]:
    return simulate(with_(STEADY, **OPENSHIFT))


def test_the_default_profile_registers_no_cni_attachment_or_grant(default_profile: dict[str, Registration]) -> None:
    types = {r.type for r in default_profile.values()}
    assert not types & {CNI, PRIVILEGES, NAD, ROLE_BINDING}
    assert k((REVISION, "1-30-2"), (CHART, "istiod-1-30-2")) in default_profile


def test_openshift_installs_cni_in_kube_system_after_base_and_before_every_revision(
    openshift: dict[str, Registration],
) -> None:
    chart = openshift[CNI_CHART]
    assert chart.inputs["chart"] == "/mirror/istio-1.30.2/cni"
    assert chart.inputs["namespace"] == "kube-system"
    assert chart.inputs["values"]["global"] == {"hub": "mirror.example/istio", "tag": "1.30.2", "platform": "openshift"}
    assert "kubernetes:helm.sh/v4:Chart::istio-base" in chart.dependencies
    istiod = openshift[k((REVISION, "1-30-2"), (CHART, "istiod-1-30-2"))]
    # A dependency on a component is one on each of its children.
    assert {f"{CHART}::istio-cni", f"{ROLE_BINDING}::istio-system-istio-mesh-scc-anyuid"} <= istiod.dependencies
    assert istiod.inputs["values"]["pilot"] == {"cni": {"enabled": True}}


def test_openshift_grants_anyuid_to_istio_system_and_each_gateways_service_account(
    openshift: dict[str, Registration],
) -> None:
    bindings = {r.name: r.inputs for r in openshift.values() if r.type == ROLE_BINDING}
    assert set(bindings) == {"istio-system-istio-mesh-scc-anyuid", "istio-ingress-istio-mesh-scc-anyuid-ingress"}
    control = bindings["istio-system-istio-mesh-scc-anyuid"]
    assert control["roleRef"]["name"] == "system:openshift:scc:anyuid"
    assert control["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                    "name": "system:serviceaccounts:istio-system"}]
    assert bindings["istio-ingress-istio-mesh-scc-anyuid-ingress"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "ingress", "namespace": "istio-ingress"}
    ]


def test_openshift_gives_every_bound_namespace_its_attachment_before_its_label(
    openshift: dict[str, Registration],
) -> None:
    for ns in STEADY["namespaces"]:
        nad = openshift[k((BINDINGS, "namespaces"), (NAD, f"{ns}-network-attachment"))]
        assert nad.inputs["metadata"] == {"name": "istio-cni", "namespace": ns}
        assert f"{NAD}::{ns}-network-attachment" in openshift[NAMESPACE_LABELS].dependencies
    assert sum(r.type == NAD for r in openshift.values()) == len(STEADY["namespaces"])


def test_turning_openshift_and_cni_on_adds_only_and_rerenders_the_charts(
    default_profile: dict[str, Registration], openshift: dict[str, Registration],
) -> None:
    d = diff(default_profile, openshift)
    assert d.deleted == set()
    assert {openshift[key].type for key in d.added} == {CNI, PRIVILEGES, NAD, ROLE_BINDING, CHART}
    charts = {key for key in d.updated if default_profile[key].type == CHART}
    assert charts == {k((CHART, "istio-base")), k((REVISION, "1-30-2"), (CHART, "istiod-1-30-2")),
                      k((GATEWAY, "ingress"), (CHART, "ingress"))}
    # Bindings keep their labels; only their dependency on the new attachments is new.
    assert NAMESPACE_LABELS not in d.updated
    assert openshift[NAMESPACE_LABELS].type == LABELS


def test_the_canary_walk_with_openshift_and_cni_changes_what_it_does_without_plus_cni_following_base() -> None:
    plain = [simulate(step) for step in WALK]
    on = [simulate(with_(step, **OPENSHIFT)) for step in WALK]
    for i in range(1, len(WALK)):
        without, with_cni = diff(plain[i - 1], plain[i]), diff(on[i - 1], on[i])
        assert with_cni.added == without.added and with_cni.deleted == without.deleted, i
        # Only adding the canary changes the newest version, which istio-cni follows.
        follows_base = {CNI_CHART} if i == 1 else set()
        assert with_cni.updated == without.updated | follows_base, i
    assert on[1][CNI_CHART].inputs["chart"] == "/mirror/istio-1.31.0/cni"
    assert on[-1][CNI_CHART].inputs["values"]["global"]["tag"] == "1.31.0"
