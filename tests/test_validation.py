"""Every config rule with a bad config: the error names the key and says what to do."""

from __future__ import annotations

import copy
from typing import Any

import pulumi
import pytest

from mesh.program import spec_from_config
from mesh.spec import SpecError, load_spec
from mesh.validation import in_place_changes, validate

GOOD: dict[str, Any] = {
    "revisions": {"1-30-2": {"version": "1.30.2"}, "1-31-0": {"version": "1.31.0"}},
    "tags": {"default": "1-30-2", "stable": "1-30-2", "canary": "1-31-0"},
    "namespaces": {"payments": "canary", "checkout": {"revision": "stable", "strategy": "natural"}},
    "gateways": {"ingress": {"namespace": "istio-ingress", "revision": "stable"}},
}


def with_(**changes: Any) -> dict[str, Any]:
    config = copy.deepcopy(GOOD)
    config.update(changes)
    return config


def errors_of(config: dict[str, Any]) -> list[str]:
    """All messages, whether pydantic (shape) or validation (cross-key) found them."""
    try:
        spec = load_spec(config)
    except SpecError as exc:
        return [str(e) for e in exc.errors]
    return [str(e) for e in validate(spec)]


def only_error(config: dict[str, Any]) -> str:
    errors = errors_of(config)
    assert len(errors) == 1, errors
    return errors[0]


def test_the_good_config_has_no_errors() -> None:
    assert errors_of(GOOD) == []


@pytest.mark.parametrize("name", ["1.30.2", "Canary", "-x", "x" * 57])
def test_revision_names_are_dns_labels_without_dots(name: str) -> None:
    error = only_error(with_(revisions={**GOOD["revisions"], name: {"version": "1.30.2"}}))
    assert error.startswith(f"istio-mesh:revisions.{name}: revision name")


def test_a_revision_may_not_be_called_default() -> None:
    error = only_error(with_(revisions={**GOOD["revisions"], "default": {"version": "1.30.2"}}))
    assert error.startswith("istio-mesh:revisions.default:") and "set `tags.default`" in error


def test_tag_names_are_dns_labels() -> None:
    error = only_error(with_(tags={**GOOD["tags"], "my.tag": "1-30-2"}))
    assert error.startswith("istio-mesh:tags.my.tag: tag name")


def test_a_tag_may_not_share_a_revision_name() -> None:
    error = only_error(with_(tags={**GOOD["tags"], "1-31-0": "1-31-0"}))
    assert error == ('istio-mesh:tags.1-31-0: "1-31-0" is also a revision name; a tag must differ from every '
                     "revision so labels stay unambiguous: rename the tag")


def test_a_tag_must_point_at_a_revision() -> None:
    error = only_error(with_(tags={**GOOD["tags"], "canary": "1-32-0"}))
    assert error.startswith('istio-mesh:tags.canary: points at revision "1-32-0", which is not in revisions')
    assert "known: 1-30-2, 1-31-0" in error


def test_bindings_and_gateways_must_point_at_a_tag_or_revision() -> None:
    config = with_(namespaces={"payments": "canery"},
                   gateways={"ingress": {"namespace": "istio-ingress", "revision": "stabel"}})
    errors = errors_of(config)
    assert [e.split(":", 2)[1] for e in errors] == ["namespaces.payments", "gateways.ingress.revision"]
    assert all("neither a tag nor a revision" in e for e in errors)


def test_removing_a_revision_still_in_use_names_every_reference_and_the_order_of_work() -> None:
    config = with_(revisions={"1-31-0": {"version": "1.31.0"}})  # 1-30-2 dropped, tags still point at it
    errors = errors_of(config)
    assert sorted(e.split(":", 2)[1] for e in errors) == ["tags.default", "tags.stable"]
    assert all("first move everything that refers to it" in e for e in errors)


@pytest.mark.parametrize("ns", ["kube-system", "kube-public"])
def test_system_namespaces_cannot_be_bound(ns: str) -> None:
    error = only_error(with_(namespaces={ns: "stable"}))
    assert error == f"istio-mesh:namespaces.{ns}: {ns} is never injected by Istio and cannot be bound: remove it " \
                    "from namespaces"


@pytest.mark.parametrize("version", ["1.30", "latest", "v1.30.2"])
def test_versions_are_semver(version: str) -> None:
    error = only_error(with_(revisions={"1-30-2": {"version": version}, "1-31-0": {"version": "1.31.0"}}))
    assert error == f'istio-mesh:revisions.1-30-2.version: "{version}" is not a semantic version such as "1.30.2"'


def test_a_canary_may_be_at_most_two_minors_ahead_of_the_oldest_revision() -> None:
    assert errors_of(with_(revisions={"1-30-2": {"version": "1.30.2"}, "1-31-0": {"version": "1.32.0"}})) == []
    error = only_error(with_(revisions={"1-30-2": {"version": "1.30.2"}, "1-31-0": {"version": "1.33.1"}}))
    assert error.startswith("istio-mesh:revisions.1-31-0.version: 1.33.1 is 3 minors ahead of revision 1-30-2")
    assert "intermediate revision (1.32.x)" in error


def test_revisions_may_not_span_major_versions() -> None:
    error = only_error(with_(revisions={"1-30-2": {"version": "1.30.2"}, "1-31-0": {"version": "2.0.0"}}))
    assert error.startswith("istio-mesh:revisions.1-31-0.version: 2.0.0 is a different major version")


def test_in_place_version_changes_go_one_minor_at_a_time() -> None:
    assert in_place_changes({"r": "1.29.3"}, {"r": "1.30.1"}) == []
    assert in_place_changes({"r": "1.30.1"}, {"r": "1.29.3"}) == []  # one-minor downgrade (rollback) is fine
    assert in_place_changes({}, {"r": "1.31.0"}) == []  # a new revision is not an in-place change
    (error,) = in_place_changes({"r": "1.29.3", "s": "1.30.0"}, {"r": "1.31.0", "s": "1.30.0"})
    assert str(error).startswith("istio-mesh:revisions.r.version: changes revision r in place from 1.29.3 to 1.31.0")
    assert "add a new revision" in str(error)


def test_a_gateway_in_a_namespace_bound_elsewhere_is_refused() -> None:
    config = with_(namespaces={**GOOD["namespaces"], "istio-ingress": "canary"})
    error = only_error(config)
    assert error.startswith('istio-mesh:gateways.ingress.revision: is "stable" but its namespace istio-ingress is '
                            'bound to "canary"')


def test_values_the_program_owns_are_refused() -> None:
    config = with_(revisions={"1-30-2": {"version": "1.30.2", "values": {"global": {"tag": "1.29.0"}}},
                              "1-31-0": {"version": "1.31.0", "values": {"revision": "x"}}})
    errors = errors_of(config)
    assert [e.split(":", 2)[1] for e in errors] == ["revisions.1-30-2.values.global.tag",
                                                     "revisions.1-31-0.values.revision"]


def test_shape_errors_name_the_key() -> None:
    config = with_(
        namespaces={"payments": {"revision": "canary", "strategy": "fast"}},
        rollout={"concurrency": 0, "timeoutSecs": 10},
        charts={"path": "/mirror", "oci": "oci://r/istio"},
    )
    errors = errors_of(config)
    assert "istio-mesh:namespaces.payments.strategy: input should be 'rolling', 'natural' or 'none' (got 'fast')" \
        in errors
    assert "istio-mesh:rollout.concurrency: input should be greater than or equal to 1" in errors
    assert "istio-mesh:rollout.timeoutSecs: is not a known setting: check the spelling against Pulumi.yaml's " \
           "config block" in errors
    assert "istio-mesh:charts: set only one of repository, path, oci (got path, oci)" in errors


def test_missing_revisions_says_how_to_add_one() -> None:
    assert errors_of({}) == [
        "istio-mesh:revisions: is not set: declare at least one revision, e.g. "
        "`pulumi config set --path 'revisions.1-30-2.version' 1.30.2`"
    ]


def test_all_errors_are_reported_together() -> None:
    config = with_(tags={**GOOD["tags"], "default": "gone", "1-30-2": "1-30-2"}, namespaces={"kube-system": "stable"})
    assert sorted(e.split(":", 2)[1] for e in errors_of(config)) == [
        "namespaces.kube-system", "tags.1-30-2", "tags.default"]


def test_the_program_turns_problems_into_one_run_error_before_registering_anything() -> None:
    with pytest.raises(pulumi.RunError) as info:
        spec_from_config(with_(tags={**GOOD["tags"], "default": "gone"}))
    assert "1 problem(s)" in str(info.value) and "istio-mesh:tags.default" in str(info.value)


def test_the_version_gate_checks_in_place_jumps_against_what_was_deployed() -> None:
    from mesh.providers.version_gate import VersionGateProvider

    gate = VersionGateProvider()
    assert gate.check({}, {"versions": {"r": "1.30.0"}}).failures == []  # first deployment
    assert gate.check({"versions": {"r": "1.30.0"}}, {"versions": {"r": "1.31.2"}}).failures == []
    (failure,) = gate.check({"versions": {"r": "1.30.0"}}, {"versions": {"r": "1.32.0"}}).failures
    assert failure.property == "versions"
    assert failure.reason.startswith("istio-mesh:revisions.r.version: changes revision r in place from 1.30.0")
    assert gate.diff("versions", {"versions": {"r": "1.30.0"}}, {"versions": {"r": "1.30.0"}}).changes is False
    assert gate.diff("versions", {"versions": {"r": "1.30.0"}}, {"versions": {"r": "1.30.1"}}).changes is True
