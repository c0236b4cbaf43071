"""Rule 5: Istio's upgrade notes between two versions, from the release notes of the pinned snapshots."""

from __future__ import annotations

from mesh.chart_files import read_note, release_notes
from mesh.checks.steps import Step
from mesh.checks.upgrade_notes import Note, between, check
from tests.chart_mirror import NEW, OLD, PATCH, mirror


def test_the_notes_new_in_the_target_snapshot_with_upgrade_notes_are_listed() -> None:
    available, where = release_notes(mirror(), [OLD, NEW])
    if set(available) != {OLD, NEW}:
        from harness.toolchain import skip_or_fail_missing

        skip_or_fail_missing("the istio.io/istio snapshots the mirror's SOURCE files name are not in the module cache")
    ids = between(available[OLD], available[NEW])
    notes = {i: read_note(where[NEW], i) for i in ids}
    (finding,) = check([Step("revisions.r", "istiod", OLD, NEW, "in place")], available, notes)
    assert finding.severity == "warning"
    titles = {n["title"] for n in finding.details["notes"]}
    assert "Default behavior for sending unhealthy endpoints" in titles
    assert "PILOT_SPAWN_UPSTREAM_SPAN_FOR_GATEWAY feature flag removed" in titles


def test_versions_of_one_snapshot_or_without_notes_say_what_cannot_be_known() -> None:
    same = frozenset({"a.yaml"})
    (patch,) = check([Step("r", "istiod", OLD, PATCH, "in place")], {OLD: same, PATCH: same}, {})
    assert patch.severity == "warning" and "same Istio snapshot" in patch.message
    (missing,) = check([Step("r", "istiod", OLD, NEW, "in place")], {OLD: same}, {})
    assert "no release notes are at hand for 1.31.0" in missing.message


def test_a_step_without_upgrade_notes_passes() -> None:
    notes = {"x.yaml": Note("x.yaml", "bug-fix", "istioctl")}
    available = {OLD: frozenset(), NEW: frozenset({"x.yaml"})}
    (finding,) = check([Step("r", "istiod", OLD, NEW, "in place")], available, notes)
    assert finding.severity == "passed" and finding.details == {"notes": 1}
