"""Chart sources, values and the tag webhook manifests (pure functions)."""

from __future__ import annotations

from mesh.charts import ChartRef, base_values, chart_ref, deep_merge, gateway_values, gateway_version, istiod_values
from mesh.revision_tag_webhook import tag_service, tag_webhook
from mesh.spec import ChartSource, load_spec

SPEC = load_spec({
    "hub": "mirror.example/istio",
    "revisions": {"1-30-2": {"version": "1.30.2", "values": {"pilot": {"replicaCount": 2}, "global": {"x": 1}}},
                  "1-31-0": {"version": "1.31.0"}},
    "tags": {"default": "1-31-0", "stable": "1-30-2"},
    "gateways": {"ingress": {"namespace": "istio-ingress", "revision": "stable", "replicas": 3,
                             "service": {"type": "ClusterIP", "ports": [{"name": "http2", "port": 80}]}}},
})


def test_chart_sources() -> None:
    assert chart_ref(ChartSource(), "istiod", "1.30.2") == ChartRef(
        "istiod", "1.30.2", "https://istio-release.storage.googleapis.com/charts")
    assert chart_ref(ChartSource(path="/m/istio-{version}/"), "base", "1.31.0") == ChartRef("/m/istio-1.31.0/base")
    home = ChartSource(path="~/mirror/{version}")
    assert not chart_ref(home, "istiod", "1.30.2").chart.startswith("~")
    assert chart_ref(home, "istiod", "1.30.2").chart.endswith("/mirror/1.30.2/istiod")
    assert chart_ref(ChartSource(oci="oci://r.example/istio/"), "gateway", "1.31.0") == ChartRef(
        "oci://r.example/istio/gateway", "1.31.0")


def test_base_follows_the_newest_revision_and_the_default_tag() -> None:
    assert SPEC.newest_version == "1.31.0"
    assert base_values(SPEC)["defaultRevision"] == "1-31-0"
    no_default = load_spec({"revisions": {"a": {"version": "1.30.0"}}})
    assert base_values(no_default)["defaultRevision"] == ""


def test_istiod_values_merge_user_values_over_the_programs() -> None:
    values = istiod_values(SPEC, "1-30-2")
    assert values["revision"] == "1-30-2"
    assert values["global"] == {
        "hub": "mirror.example/istio", "tag": "1.30.2", "istioNamespace": "istio-system", "x": 1}
    assert values["pilot"] == {"replicaCount": 2}
    assert values["revisionTags"] == []
    assert values["base"] == {"validationFailurePolicy": "Fail"}


def test_validators_render_fail_closed_so_istiods_update_never_conflicts() -> None:
    assert base_values(SPEC)["base"] == {"validationFailurePolicy": "Fail"}


def test_gateway_is_pinned_to_its_tag_and_its_chart_follows_the_tags_revision() -> None:
    gw = SPEC.gateways["ingress"]
    values = gateway_values(SPEC, gw)
    assert values["revision"] == "stable"
    assert values["replicaCount"] == 3 and values["autoscaling"] == {"enabled": False}
    assert values["service"] == {"type": "ClusterIP",
                                 "ports": [{"name": "http2", "port": 80, "targetPort": 80, "protocol": "TCP"}]}
    assert gateway_version(SPEC, gw) == "1.30.2"


def test_deep_merge_does_not_alias_inputs() -> None:
    base = {"a": {"b": 1}}
    merged = deep_merge(base, {"a": {"c": 2}})
    merged["a"]["b"] = 9
    assert base == {"a": {"b": 1}} and merged == {"a": {"b": 9, "c": 2}}


def selectors(hook: dict) -> dict[str, tuple]:
    return {w["name"]: (w["namespaceSelector"]["matchExpressions"], w["objectSelector"]["matchExpressions"])
            for w in hook["webhooks"]}


def test_a_tag_webhook_selects_the_tag_and_calls_its_revision() -> None:
    hook = tag_webhook("stable", "1-30-2", {})
    assert hook["metadata"]["name"] == "istio-revision-tag-stable"
    assert hook["metadata"]["labels"]["istio.io/rev"] == "1-30-2"
    assert {w["clientConfig"]["service"]["name"] for w in hook["webhooks"]} == {"istiod-1-30-2"}
    sel = selectors(hook)
    assert set(sel) == {"rev.namespace.sidecar-injector.istio.io", "rev.object.sidecar-injector.istio.io"}
    ns_sel, obj_sel = sel["rev.namespace.sidecar-injector.istio.io"]
    assert {"key": "istio.io/rev", "operator": "In", "values": ["stable"]} in ns_sel
    assert {"key": "istio-injection", "operator": "DoesNotExist"} in ns_sel
    assert obj_sel == [{"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]
    # The chart's defaults when the revision sets nothing.
    assert {(w["reinvocationPolicy"], w["clientConfig"]["service"]["path"], w["failurePolicy"])
            for w in hook["webhooks"]} == {("Never", "/inject", "Fail")}
    assert all("caBundle" not in w["clientConfig"] for w in hook["webhooks"]), "istiod's field, never ours"


def test_a_tag_webhook_takes_the_injector_settings_of_its_revision() -> None:
    values = {"sidecarInjectorWebhook": {"reinvocationPolicy": "IfNeeded"}, "istiodRemote": {"injectionPath": "/x"}}
    hook = tag_webhook("stable", "1-30-2", values)
    assert {(w["reinvocationPolicy"], w["clientConfig"]["service"]["path"]) for w in hook["webhooks"]} == {
        ("IfNeeded", "/x")}
    remote = tag_webhook("stable", "r", {"istiodRemote": {"injectionURL": "https://istiod.example:15017/inject"}})
    assert [w["clientConfig"] for w in remote["webhooks"]] == [{"url": "https://istiod.example:15017/inject"}] * 2


def test_enable_namespaces_by_default_adds_the_auto_entry_to_the_default_tag_only() -> None:
    values = {"sidecarInjectorWebhook": {"enableNamespacesByDefault": True}}
    default = selectors(tag_webhook("default", "1-31-0", values))
    ns_sel, obj_sel = default["auto.sidecar-injector.istio.io"]
    assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
            "values": ["kube-system", "kube-public", "kube-node-lease", "local-path-storage"]} in ns_sel
    assert {"key": "sidecar.istio.io/inject", "operator": "DoesNotExist"} in obj_sel
    assert "auto.sidecar-injector.istio.io" not in selectors(tag_webhook("stable", "1-31-0", values))
    assert "auto.sidecar-injector.istio.io" not in selectors(tag_webhook("default", "1-31-0", {}))


def test_only_the_default_tag_serves_the_legacy_label() -> None:
    legacy = {"key": "istio-injection", "operator": "In", "values": ["enabled"]}
    default = selectors(tag_webhook("default", "1-31-0", {}))
    assert default["namespace.sidecar-injector.istio.io"][0] == [legacy]
    assert "object.sidecar-injector.istio.io" in default
    assert all(legacy not in ns for ns, _ in selectors(tag_webhook("stable", "1-31-0", {})).values())


def test_tag_service_exists_from_istio_1_28() -> None:
    assert tag_service("stable", "1-27-3", "1.27.3") is None
    assert tag_service("stable", "1-28-0", "1.28.0") is not None
    svc = tag_service("stable", "1-30-2", "1.30.2")
    assert svc is not None
    assert svc["metadata"]["name"] == "istiod-revision-tag-stable"
    assert svc["spec"]["selector"] == {"app": "istiod", "istio.io/rev": "1-30-2"}


def test_base_chart_children_take_over_fields_another_installer_set() -> None:
    import pulumi

    from mesh.components.helm import take_over_fields

    props = {"metadata": {"name": "istiod-default-validator", "annotations": {"a": "b"}}, "webhooks": []}
    vwc = "kubernetes:admissionregistration.k8s.io/v1:ValidatingWebhookConfiguration"
    args = pulumi.ResourceTransformArgs(True, vwc, "v", props, pulumi.ResourceOptions())
    result = take_over_fields(args)
    assert result.props["metadata"]["annotations"] == {"a": "b", "pulumi.com/patchForce": "true"}
    assert props["metadata"]["annotations"] == {"a": "b"}, "the rendered object itself is not modified"
    bare = take_over_fields(pulumi.ResourceTransformArgs(True, "t", "n", {"kind": "x"}, pulumi.ResourceOptions()))
    assert bare.props["metadata"] == {"annotations": {"pulumi.com/patchForce": "true"}}
