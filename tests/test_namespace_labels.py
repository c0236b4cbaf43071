"""The labels of bound namespaces: what the stack-wide resource changes, given the bindings and the cluster."""

from __future__ import annotations

from typing import Any

from mesh.namespace_labels import (
    FIELD_MANAGER,
    REMOVED_LEGACY_ANNOTATION,
    REPLACED_REV_ANNOTATION,
    RESTORE_MANAGER,
    Change,
    LiveNamespace,
    drift,
    handover_patch,
    keep_patch,
    label_apply,
    live_namespace,
    owns_rev_label,
    plan,
    release_patch,
    removal_patch,
    restore_apply,
)


def applied(manager: str, *labels: str, operation: str = "Apply") -> dict[str, Any]:
    return {"manager": manager, "operation": operation,
            "fieldsV1": {"f:metadata": {"f:labels": {f"f:{label}": {} for label in labels}}}}


def ns(name: str, owned: bool = True, annotations: dict[str, str] | None = None, **labels: str) -> LiveNamespace:
    return LiveNamespace(name, labels=labels, annotations=annotations or {}, label_owned=owned)


def test_ownership_is_our_managers_apply_of_the_rev_label() -> None:
    assert owns_rev_label([applied(FIELD_MANAGER, "istio.io/rev")])
    assert not owns_rev_label([applied("istio-mesh", "istio.io/rev")]), "an earlier version's patch is not ours"
    assert not owns_rev_label([applied(FIELD_MANAGER, "team")]), "our manager, another label"
    assert not owns_rev_label([applied(FIELD_MANAGER, "istio.io/rev", operation="Update")])
    assert not owns_rev_label([])


def test_a_namespace_is_read_from_the_api_servers_object() -> None:
    obj = {"metadata": {"name": "team", "labels": {"istio.io/rev": "stable", "istio-injection": "enabled"},
                        "annotations": {"a": "b"}, "managedFields": [applied(FIELD_MANAGER, "istio.io/rev")]}}
    live = live_namespace(obj)
    assert live == LiveNamespace("team", {"istio.io/rev": "stable", "istio-injection": "enabled"}, {"a": "b"}, True)
    assert live.legacy == "enabled"
    assert live_namespace({"metadata": {"name": "bare"}}) == LiveNamespace("bare")


def test_only_namespaces_that_differ_are_changed() -> None:
    live = {"a": ns("a", **{"istio.io/rev": "stable"}), "b": ns("b", **{"istio.io/rev": "stable"})}
    todo = plan({"a": "stable", "b": "canary"}, released=(), live=live)
    assert todo.changes == [Change("b", label="canary")] and todo.missing == []


def test_a_label_right_but_not_ours_is_applied_so_the_earlier_patch_can_let_go() -> None:
    live = {"a": ns("a", owned=False, **{"istio.io/rev": "stable"})}
    assert plan({"a": "stable"}, (), live).changes == [Change("a", label="stable")]


def test_a_legacy_label_is_removed_with_the_value_read_even_when_the_label_is_right() -> None:
    live = {"a": ns("a", **{"istio.io/rev": "stable", "istio-injection": "enabled"}),
            "b": ns("b", **{"istio-injection": "disabled"})}
    assert plan({"a": "stable", "b": "stable"}, (), live).changes == [
        Change("a", remove_legacy="enabled"), Change("b", label="stable", remove_legacy="disabled")]


def test_a_bound_namespace_that_does_not_exist_is_reported_not_created() -> None:
    assert plan({"gone": "stable"}, (), {}).missing == ["gone"]


def test_unbinding_gives_the_label_up_and_the_legacy_label_back() -> None:
    kept = {REMOVED_LEGACY_ANNOTATION: "enabled"}
    live = {"a": ns("a", annotations=kept, **{"istio.io/rev": "stable"}),
            "b": ns("b", **{"istio.io/rev": "stable"}),
            "c": ns("c", annotations=kept, **{"istio.io/rev": "stable", "istio-injection": "disabled"}),
            "d": ns("d", owned=False, **{"istio.io/rev": "x"})}
    todo = plan({}, released=["a", "b", "c", "d", "deleted"], live=live)
    assert todo.changes == [
        Change("a", release=True, restore_legacy="enabled", forget_legacy=True),
        Change("b", release=True),
        Change("c", release=True, forget_legacy=True),  # set again by hand since: theirs wins
    ], "d's label is someone else's; a deleted namespace has nothing to give back"


def test_a_namespace_still_bound_is_not_released() -> None:
    live = {"a": ns("a", **{"istio.io/rev": "canary"})}
    assert plan({"a": "canary"}, released=["a"], live=live).changes == []


def test_drift_names_what_a_hand_edit_changed() -> None:
    live = {"a": ns("a", **{"istio.io/rev": "stable"}),
            "b": ns("b", **{"istio.io/rev": "other"}),
            "c": ns("c", **{"istio.io/rev": "stable", "istio-injection": "enabled"})}
    assert drift({"a": "stable", "b": "stable", "c": "stable", "later": "stable"}, live) == {
        "b": "istio.io/rev is other, not stable",
        "c": "istio-injection=enabled is set (it beats istio.io/rev)",
    }


def test_the_apply_body_holds_only_our_label_or_nothing() -> None:
    assert label_apply("a", "stable") == {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "labels": {"istio.io/rev": "stable"}}}
    assert label_apply("a", None) == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}


def test_removal_is_guarded_by_the_value_read_and_remembers_it() -> None:
    guard = [{"op": "test", "path": "/metadata/labels/istio-injection", "value": "disabled"},
             {"op": "remove", "path": "/metadata/labels/istio-injection"}]
    key = REMOVED_LEGACY_ANNOTATION.replace("/", "~1")
    assert removal_patch(ns("a"), "disabled") == [
        *guard, {"op": "add", "path": "/metadata/annotations", "value": {REMOVED_LEGACY_ANNOTATION: "disabled"}}]
    assert removal_patch(ns("a", annotations={"x": "y"}), "disabled") == [
        *guard, {"op": "add", "path": f"/metadata/annotations/{key}", "value": "disabled"}]
    assert removal_patch(ns("a", annotations={REMOVED_LEGACY_ANNOTATION: "enabled"}), "disabled") == guard, (
        "the value from before the first binding is the one given back")


def test_the_release_patch_restores_and_forgets() -> None:
    assert release_patch(Change("a", release=True, restore_legacy="enabled", forget_legacy=True)) == {
        "metadata": {"labels": {"istio-injection": "enabled"}, "annotations": {REMOVED_LEGACY_ANNOTATION: None}}}
    assert release_patch(Change("a", release=True, forget_legacy=True)) == {
        "metadata": {"annotations": {REMOVED_LEGACY_ANNOTATION: None}}}
    assert release_patch(Change("a", release=True)) is None


def test_an_earlier_guards_delete_hands_the_value_over_while_bound_and_gives_it_back_once_unbound() -> None:
    assert handover_patch(ns("a", **{"istio.io/rev": "s"}), "enabled") == {
        "metadata": {"annotations": {REMOVED_LEGACY_ANNOTATION: "enabled"}}}
    assert handover_patch(ns("a", owned=False), "enabled") == {"metadata": {"labels": {"istio-injection": "enabled"}}}
    assert handover_patch(ns("a", annotations={REMOVED_LEGACY_ANNOTATION: "x"}), "enabled") is None
    assert handover_patch(ns("a", **{"istio-injection": "disabled"}), "enabled") is None, "a hand edit wins"
    assert handover_patch(ns("a"), None) is None, "nothing was removed"


def test_a_hand_set_rev_label_is_kept_when_first_bound_and_given_back_on_unbinding() -> None:
    """`kubectl label ns apps istio.io/rev=1-29-0`, bound to `stable`, then unbound: the namespace leaves with
    1-29-0, so its next pods are still injected (as a legacy label already is)."""
    hand = {"apps": ns("apps", owned=False, **{"istio.io/rev": "1-29-0"})}
    assert plan({"apps": "stable"}, released=(), live=hand).changes == [
        Change("apps", label="stable", keep_rev="1-29-0")]
    bound = {"apps": ns("apps", annotations={REPLACED_REV_ANNOTATION: "1-29-0"}, **{"istio.io/rev": "stable"})}
    change = plan({}, released=["apps"], live=bound).changes
    assert change == [Change("apps", release=True, restore_rev="1-29-0", forget_rev=True)]
    assert keep_patch(change[0]) is None
    assert keep_patch(Change("apps", label="stable", keep_rev="1-29-0")) == {
        "metadata": {"annotations": {REPLACED_REV_ANNOTATION: "1-29-0"}}}
    assert release_patch(change[0]) == {"metadata": {"annotations": {REPLACED_REV_ANNOTATION: None}}}


def test_only_a_first_binding_keeps_the_rev_label_it_replaces() -> None:
    same = {"apps": ns("apps", owned=False, **{"istio.io/rev": "stable"})}
    assert plan({"apps": "stable"}, released=(), live=same).changes == [Change("apps", label="stable")], (
        "the same value is shared with its hand owner: unbinding leaves it")
    drifted = {"apps": ns("apps", owned=False, **{"istio.io/rev": "other"})}
    assert plan({"apps": "stable"}, released=["apps"], live=drifted).changes == [Change("apps", label="stable")], (
        "a hand edit of a bound namespace is drift put right, not what it had before")
    kept = {"apps": ns("apps", owned=False, annotations={REPLACED_REV_ANNOTATION: "1-29-0"},
                       **{"istio.io/rev": "other"})}
    assert plan({"apps": "stable"}, released=(), live=kept).changes == [Change("apps", label="stable")], (
        "a value kept already is the one from before the first binding")


def test_a_rev_label_set_again_by_hand_since_wins_on_unbinding() -> None:
    live = {"apps": ns("apps", owned=False, annotations={REPLACED_REV_ANNOTATION: "1-29-0"},
                       **{"istio.io/rev": "mine"})}
    assert plan({}, released=["apps"], live=live).changes == [Change("apps", forget_rev=True)]


def test_the_given_back_rev_label_is_applied_by_its_own_manager() -> None:
    """Applied (not merged) under another manager before ours lets go, so it stays even when it equals our
    value, and there is no moment without a label."""
    assert restore_apply(Change("apps", release=True, restore_rev="1-29-0")) == {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps", "labels": {"istio.io/rev": "1-29-0"}}}
    assert restore_apply(Change("apps", release=True)) is None
    assert RESTORE_MANAGER != FIELD_MANAGER
