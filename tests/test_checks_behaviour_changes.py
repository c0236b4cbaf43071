"""Rule 3: the behaviour flags that flip between two minors, from the real charts' compatibility profiles."""

from __future__ import annotations

from mesh.chart_files import library
from mesh.checks.behaviour_changes import check, compatibility_versions
from mesh.checks.steps import Step
from tests.chart_mirror import NEW, OLD, PATCH, mirror

TO_NEW = Step("revisions.r", "istiod", OLD, NEW, "in place")


def test_a_minor_step_lists_the_flags_of_the_target_charts_profile_for_the_old_minor() -> None:
    charts = library(mirror(), [("istiod", NEW)])
    (finding,) = check([TO_NEW], {"revisions.r": {}}, charts)
    assert finding.severity == "warning"
    assert set(finding.details["flags"]) == {
        "pilot.env.PILOT_ENABLE_STRICT_GATEWAY_MERGING",
        "pilot.env.PILOT_SPAWN_UPSTREAM_SPAN_FOR_GATEWAY",
        "pilot.env.PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS",
    }
    assert finding.details["flags"]["pilot.env.PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS"] == {
        "old": "false", "changed_in": "1.31"}
    assert 'set revisions.r.values.compatibilityVersion to "1.30"' in finding.message


def test_compatibility_version_keeps_the_old_behaviour_and_a_flag_in_values_is_not_listed() -> None:
    charts = library(mirror(), [("istiod", NEW)])
    (kept,) = check([TO_NEW], {"revisions.r": {"compatibilityVersion": "1.30"}}, charts)
    assert kept.severity == "passed" and "keeping 1.30's behaviour" in kept.message
    (partly,) = check([TO_NEW], {"revisions.r": {"env": {"PILOT_ENABLE_STRICT_GATEWAY_MERGING": "true"}}}, charts)
    assert "pilot.env.PILOT_ENABLE_STRICT_GATEWAY_MERGING" not in partly.details["flags"]
    assert len(partly.details["flags"]) == 2


def test_a_patch_step_or_a_new_revision_without_an_older_one_flips_nothing() -> None:
    charts = library(mirror(), [("istiod", PATCH), ("istiod", NEW)])
    assert check([Step("revisions.r", "istiod", OLD, PATCH, "in place"),
                  Step("revisions.n", "istiod", None, NEW, "new")], {}, charts) == []


def test_a_compatibility_version_the_chart_does_not_ship_is_refused_naming_the_accepted_values() -> None:
    charts = library(mirror(), [("istiod", OLD), ("istiod", NEW)])
    uses = [("revisions.a", "istiod", OLD, {"compatibilityVersion": "1.30"}),
            ("revisions.b", "istiod", NEW, {"compatibilityVersion": "1.30"}),
            ("revisions.c", "istiod", NEW, {"compatibilityVersion": 1.3})]
    refused, ok, number = compatibility_versions(uses, charts)
    assert (refused.key, refused.severity) == ("revisions.a.values.compatibilityVersion", "refusal")
    assert "accepts one of 1.25, 1.26, 1.27, 1.28, 1.29" in refused.message
    assert ok.severity == "passed"
    assert number.severity == "refusal" and "quote it" in number.message
