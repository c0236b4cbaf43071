"""Injection webhooks that would overlap once a change is applied (IST0139), from the webhooks the config
renders, the live ones it leaves alone, and the namespaces' labels after the change."""

from __future__ import annotations

import copy

from mesh.label_selector import selects
from mesh.review import Review
from mesh.revision_tag_webhook import tag_webhook
from mesh.revisionless_injector import deactivated
from mesh.spec import load_spec
from mesh.webhook_overlap import namespaces_after, overlaps, revision_webhook, webhooks_after

SPEC = load_spec({
    "revisions": {"1-30-0": {"version": "1.30.0"}, "1-31-0": {"version": "1.31.0"}},
    "tags": {"default": "1-31-0", "stable": "1-30-0"},
    "namespaces": {"team-a": "stable", "team-b": "1-31-0"},
})


def revisionless() -> dict:
    """A revisionless install's injector: the chart's four entries for revision ""."""
    hook = copy.deepcopy(tag_webhook("default", "x", {}))
    hook["metadata"] = {"name": "istio-sidecar-injector"}
    for w, rev_value in zip(hook["webhooks"][:2], ("default", "default"), strict=True):
        for sel in (w["namespaceSelector"], w["objectSelector"]):
            for e in sel["matchExpressions"]:
                if e["key"] == "istio.io/rev" and e["operator"] == "In":
                    e["values"] = [rev_value]
    return hook


def ns(name: str, legacy: str | None = None, rev: str | None = None) -> dict[str, str]:
    """A live namespace's labels."""
    return {"kubernetes.io/metadata.name": name, **({"istio-injection": legacy} if legacy else {}),
            **({"istio.io/rev": rev} if rev else {})}


def test_selectors_follow_kubernetes_rules() -> None:
    sel = {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["x"]},
                                                           {"key": "c", "operator": "DoesNotExist"}]}
    assert selects(sel, {"a": "1"}) and selects(sel, {"a": "1", "b": "y"})
    assert not selects(sel, {"a": "1", "b": "x"}) and not selects(sel, {"a": "1", "c": ""})
    assert not selects(sel, {"a": "2"}) and selects(None, {}) and selects({}, {"z": "1"})
    assert not selects({"matchExpressions": [{"key": "k", "operator": "Exists"}]}, {})


def test_the_webhooks_this_config_renders_never_overlap() -> None:
    live = {"istio-sidecar-injector": revisionless()}
    after = webhooks_after(SPEC, [], [], live)
    assert set(after) == {"istio-sidecar-injector", "istio-sidecar-injector-1-30-0", "istio-sidecar-injector-1-31-0",
                          "istio-revision-tag-default", "istio-revision-tag-stable"}
    namespaces = namespaces_after(SPEC, [], {"legacy": ns("legacy", legacy="enabled"),
                                             "team-a": ns("team-a", legacy="enabled"), "plain": ns("plain")})
    assert namespaces["team-a"] == {"kubernetes.io/metadata.name": "team-a", "istio.io/rev": "stable"}
    assert "plain" not in namespaces
    assert overlaps(after, namespaces) == []


def test_a_revisionless_injector_overlaps_the_default_tag_unless_taken_over() -> None:
    """Without a default tag the takeover puts the old selectors back; a default tag made outside the stack
    (istioctl) then overlaps it in every legacy-labelled namespace."""
    spec = load_spec({"revisions": {"1-31-0": {"version": "1.31.0"}}, "namespaces": {"team-a": "1-31-0"}})
    foreign_tag = tag_webhook("default", "1-31-0", {})
    live = {"istio-sidecar-injector": deactivated(revisionless()), "istio-revision-tag-default": foreign_tag}
    after = webhooks_after(spec, ["1-31-0"], [], live)
    found = overlaps(after, namespaces_after(spec, [], {"legacy": ns("legacy", legacy="enabled")}))
    assert [(o.namespace, o.webhooks) for o in found] == [
        ("legacy", ["istio-revision-tag-default/namespace.sidecar-injector.istio.io",
                    "istio-sidecar-injector/namespace.sidecar-injector.istio.io"])]
    assert found[0].pod_labels == {}
    md = Review("dev", [], [], {}, {}, 4, 600, overlaps=found).markdown()
    assert ("- `legacy`: webhooks `istio-revision-tag-default/namespace.sidecar-injector.istio.io`, "
            "`istio-sidecar-injector/namespace.sidecar-injector.istio.io` would all inject one pod "
            "(IST0139; pod labels: none)") in md
    assert "nothing found" not in md
    # With the default tag in the config, the takeover switches the old injector off: no overlap.
    with_default = load_spec({"revisions": {"1-31-0": {"version": "1.31.0"}}, "tags": {"default": "1-31-0"}})
    after = webhooks_after(with_default, ["1-31-0"], [], live)
    assert overlaps(after, namespaces_after(with_default, [], {"legacy": ns("legacy", legacy="enabled")})) == []


def test_a_revision_named_like_the_revisionless_one_overlaps_it_for_pods_selecting_it() -> None:
    spec = load_spec({"revisions": {"default": {"version": "1.31.0"}}})
    after = webhooks_after(spec, [], [], {"istio-sidecar-injector": revisionless()})
    found = overlaps(after, {"apps": ns("apps", rev="default")})
    assert [o.webhooks for o in found] == [[
        "istio-sidecar-injector/rev.namespace.sidecar-injector.istio.io",
        "istio-sidecar-injector-default/rev.namespace.sidecar-injector.istio.io"]]
    # Pods labelled for it in an unlabelled namespace: the object entries overlap, shown with that label.
    found = overlaps(after, {"plain": ns("plain")})
    assert [(o.webhooks[1], o.pod_labels) for o in found] == [
        ("istio-sidecar-injector-default/rev.object.sidecar-injector.istio.io", {"istio.io/rev": "default"})]


def test_removed_revisions_and_tags_leave_and_unbound_namespaces_lose_their_label() -> None:
    live = {"istio-sidecar-injector-1-29-0": revision_webhook("1-29-0"),
            "istio-revision-tag-old": tag_webhook("old", "1-29-0", {})}
    after = webhooks_after(SPEC, ["1-29-0", "1-30-0"], ["old"], live)
    assert "istio-sidecar-injector-1-29-0" not in after and "istio-revision-tag-old" not in after
    labels = namespaces_after(SPEC, ["gone"], {"gone": ns("gone", rev="old")})
    assert labels["gone"] == {"kubernetes.io/metadata.name": "gone"}
