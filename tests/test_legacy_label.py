"""The legacy `istio-injection` label of a bound namespace: removed safely, given back on unbinding."""

from __future__ import annotations

from mesh.legacy_label import kept_value, legacy_value, removal_patch, restore_patch


def ns(**labels: str) -> dict:
    return {"metadata": {"name": "team", "labels": labels}}


def test_the_value_is_read_from_the_namespace_labels() -> None:
    assert legacy_value(ns(**{"istio-injection": "enabled"})) == "enabled"
    assert legacy_value(ns(**{"istio.io/rev": "stable"})) is None
    assert legacy_value({"metadata": {"name": "bare"}}) is None


def test_removal_is_a_json_patch_guarded_by_the_value_read() -> None:
    assert removal_patch("disabled") == [
        {"op": "test", "path": "/metadata/labels/istio-injection", "value": "disabled"},
        {"op": "remove", "path": "/metadata/labels/istio-injection"},
    ]


def test_unbinding_gives_back_what_was_removed_unless_someone_set_it_again() -> None:
    assert restore_patch(ns(), "enabled") == {"metadata": {"labels": {"istio-injection": "enabled"}}}
    assert restore_patch(ns(**{"istio-injection": "disabled"}), "enabled") is None, "a later hand edit wins"
    assert restore_patch(ns(), None) is None, "nothing was removed: nothing to give back"


def test_the_value_found_at_binding_time_is_the_one_kept() -> None:
    assert kept_value("enabled", "disabled") == "enabled"
    assert kept_value(None, "disabled") == "disabled"
    assert kept_value(None, None) is None
