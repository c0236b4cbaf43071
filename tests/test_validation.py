"""Every config rule with a bad config: the error names the key and says what to do."""

from __future__ import annotations

import copy
import textwrap
from typing import Any

import pulumi
import pytest
import yaml

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


def errors_of_yaml(text: str) -> list[str]:
    """The messages for stack config written as YAML, so YAML's own reading (numbers, dates) is what is tested."""
    return errors_of(yaml.safe_load(textwrap.dedent(text)))


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
    assert error == ('istio-mesh:tags.canary: points at revision "1-32-0", which is not in revisions '
                     "(known: 1-30-2, 1-31-0); if you are removing that revision, first move everything that refers "
                     "to it to another revision (and let its pods move), then drop it")


def test_a_misspelt_reference_suggests_the_closest_name_and_no_removal() -> None:
    config = with_(namespaces={"payments": "canery", "checkout": "Stable"},
                   gateways={"ingress": {"namespace": "istio-ingress", "revision": "stabel"}})
    known = "(known: 1-30-2, 1-31-0, canary, default, stable)"
    assert errors_of(config) == [
        f'istio-mesh:namespaces.payments: points at "canery", which is neither a tag nor a revision {known}: '
        'did you mean "canary"?',
        f'istio-mesh:namespaces.checkout: points at "Stable", which is neither a tag nor a revision {known}: '
        'did you mean "stable"?',
        f'istio-mesh:gateways.ingress.revision: points at "stabel", which is neither a tag nor a revision {known}: '
        'did you mean "stable"?',
    ]


def test_a_misspelt_revision_name_is_suggested_too() -> None:
    config = with_(revisions={**GOOD["revisions"], "canary-b": {"version": "1.31.0"}},
                   namespaces={"payments": "canary-c"})
    error = only_error(config)
    assert error.startswith('istio-mesh:namespaces.payments: points at "canary-c", which is neither')
    assert error.endswith(': did you mean "canary-b"?')


def test_versions_in_revision_names_are_not_taken_for_typos() -> None:
    """1-30-2 and 1-31-0 look alike but are two revisions: never "did you mean 1-31-0"."""
    config = with_(revisions={"1-31-0": {"version": "1.31.0"}},
                   tags={"default": "1-31-0", "stable": "1-31-0", "canary": "1-31-0"},
                   namespaces={"payments": "1-30-2"})
    error = only_error(config)
    assert "did you mean" not in error
    assert error.endswith("if you are removing that revision, first move everything that refers to it to another "
                          "revision (and let its pods move), then drop it")


def test_removing_a_revision_still_in_use_names_every_reference_and_the_order_of_work() -> None:
    config = with_(revisions={"1-31-0": {"version": "1.31.0"}})  # 1-30-2 dropped, tags still point at it
    errors = errors_of(config)
    assert sorted(e.split(":", 2)[1] for e in errors) == ["tags.default", "tags.stable"]
    assert all("if you are removing that revision, first move everything that refers to it" in e for e in errors)


def test_with_the_deployed_revisions_known_the_removal_hint_is_given_only_for_a_dropped_one() -> None:
    spec = load_spec(with_(revisions={"1-31-0": {"version": "1.31.0"}},
                           tags={"default": "1-30-2", "stable": "1-31-0", "canary": "1-32-0"}))
    errors = [str(e) for e in validate(spec, deployed_revisions={"1-30-2", "1-31-0"})]
    assert errors == [
        'istio-mesh:tags.default: points at revision "1-30-2", which is not in revisions (known: 1-31-0); this '
        'change removes revision "1-30-2": first move everything that refers to it to another revision (and let '
        "its pods move), then drop it",
        'istio-mesh:tags.canary: points at revision "1-32-0", which is not in revisions (known: 1-31-0): declare '
        "it first, or use one of those",
    ]


def test_with_the_deployed_revisions_known_a_typo_still_gets_its_suggestion() -> None:
    spec = load_spec(with_(namespaces={"payments": "stabel"}))
    (error,) = validate(spec, deployed_revisions={"1-30-2", "1-31-0"})
    assert str(error).endswith('which is neither a tag nor a revision (known: 1-30-2, 1-31-0, canary, default, '
                               'stable): did you mean "stable"?')


@pytest.mark.parametrize("ns", ["kube-system", "kube-public", "kube-node-lease", "local-path-storage"])
def test_system_namespaces_cannot_be_bound(ns: str) -> None:
    error = only_error(with_(namespaces={ns: "stable"}))
    assert error == f"istio-mesh:namespaces.{ns}: {ns} is never injected by Istio and cannot be bound: remove it " \
                    "from namespaces"


@pytest.mark.parametrize("ns", ["kube-system", "kube-public", "kube-node-lease", "local-path-storage"])
def test_gateways_cannot_live_where_istio_never_injects(ns: str) -> None:
    error = only_error(with_(gateways={"ingress": {"namespace": ns, "revision": "stable"}}))
    assert error == (
        f"istio-mesh:gateways.ingress.namespace: is {ns}, where Istio never injects (its injection webhooks skip "
        "kube-node-lease, kube-public, kube-system, local-path-storage), so the gateway's pods would never get "
        "their proxy: put the gateway in a namespace of its own, e.g. istio-ingress"
    )


def test_a_gateway_namespace_that_is_no_dns_label_is_reported_under_the_gateway() -> None:
    error = only_error(with_(gateways={"ingress": {"namespace": "Istio_Ingress", "revision": "stable"}}))
    assert error.startswith('istio-mesh:gateways.ingress.namespace: namespace name "Istio_Ingress" is not a DNS-1123')


def test_gateway_ports_may_not_repeat_a_name_or_a_port_per_protocol() -> None:
    errors = errors_of_yaml("""
        revisions: {1-30-2: {version: 1.30.2}}
        gateways:
          ingress:
            namespace: istio-ingress
            revision: 1-30-2
            service:
              ports:
                - {name: http2, port: 80}
                - {name: http2, port: 8080}
                - {name: dns, port: 53}
                - {name: dns-udp, port: 53, protocol: UDP}
                - {name: https, port: 80, targetPort: 8443}
    """)
    assert errors == [
        'istio-mesh:gateways.ingress.service.ports[1].name: "http2" is also the name of ports[0]: give each port of '
        "the Service its own name",
        "istio-mesh:gateways.ingress.service.ports[4].port: 80/TCP is also the port of ports[0], and a Service "
        "serves a port number once per protocol: change the port or remove one of the two entries",
    ]


@pytest.mark.parametrize("hub", ["docker.io/istio", "registry.example.com:5000/mirror/istio", "localhost/istio"])
def test_a_registry_prefix_is_a_good_hub(hub: str) -> None:
    assert errors_of(with_(hub=hub)) == []


def test_an_empty_hub_is_refused() -> None:
    assert only_error(with_(hub=" ")) == (
        'istio-mesh:hub: is empty: set it to an image registry prefix such as "docker.io/istio" or '
        '"registry.example.com/istio", or remove the key for the default ("docker.io/istio")'
    )


@pytest.mark.parametrize(("hub", "fix"), [
    ("https://registry.example.com/istio/", 'write "registry.example.com/istio"'),
    ("oci://docker.io/istio", 'write "docker.io/istio"'),
    ("https://", 'write a registry prefix such as "docker.io/istio" or "registry.example.com/istio"'),
])
def test_a_hub_with_a_url_scheme_is_refused_with_the_prefix_to_write(hub: str, fix: str) -> None:
    assert only_error(with_(hub=hub)) == (
        f'istio-mesh:hub: "{hub}" is a URL, but hub is an image name prefix (images are <hub>/pilot:<version>, '
        f"with no scheme): {fix}"
    )


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
    assert 'istio-mesh:namespaces.payments.strategy: must be exactly one of rolling, natural, none, but YAML read ' \
           'the text "fast"' in errors
    assert "istio-mesh:rollout.concurrency: must be at least 1, but is 0" in errors
    assert "istio-mesh:rollout.timeoutSecs: is not a known setting: check the spelling against Pulumi.yaml's " \
           "config block" in errors
    assert "istio-mesh:charts: set only one of repository, path, oci (got path, oci)" in errors


def test_allowed_values_are_listed_as_they_must_be_written_with_the_closest_one() -> None:
    errors = errors_of_yaml("""
        revisions: {1-30-2: {version: 1.30.2}}
        rollout: {strategy: Rolling}
        gateways:
          ingress:
            namespace: istio-ingress
            revision: 1-30-2
            strategy: nautral
            service:
              type: Loadbalancer
              ports: [{name: dns, port: 53, protocol: udp}]
    """)
    assert errors == [
        "istio-mesh:gateways.ingress.service.type: must be exactly one of ClusterIP, NodePort, LoadBalancer, but "
        'YAML read the text "Loadbalancer": did you mean LoadBalancer?',
        "istio-mesh:gateways.ingress.service.ports[0].protocol: must be exactly one of TCP, UDP, SCTP, but YAML "
        'read the text "udp": did you mean UDP?',
        "istio-mesh:gateways.ingress.strategy: must be exactly one of rolling, natural, none, but YAML read the text "
        '"nautral": did you mean natural?',
        "istio-mesh:rollout.strategy: must be exactly one of rolling, natural, none, but YAML read the text "
        '"Rolling": did you mean rolling?',
    ]


def test_an_unquoted_version_is_read_by_yaml_as_a_number_and_the_message_says_so() -> None:
    errors = errors_of_yaml("""
        revisions:
          1-30-0: {version: 1.30}
          1-31-0: {version: 1.31.0}
    """)
    assert errors == ['istio-mesh:revisions.1-30-0.version: must be text, but YAML read the number 1.3: '
                      'quote it ("1.30.0")']


def test_type_errors_say_what_yaml_read_and_name_no_internal_class() -> None:
    errors = errors_of_yaml("""
        charts: ./charts
        hub: 5
        revisions:
          a: 1.30.0
          b:
          c: {version: 1.30.0, values: [x]}
        tags: {stable: true, canary: 2026-01-01}
        namespaces: {payments: 7, checkout: {strategy: none}}
        gateways:
          ingress:
            namespace: istio-ingress
            revision: stable
            replicas: two
            service: LoadBalancer
          egress:
            namespace: istio-egress
            revision: stable
            replicas: 1.5
            service: {ports: {name: http, port: 80}}
          east: [istio-east]
          west:
            namespace: istio-west
            revision: stable
            service: {ports: [http, {name: 80, port: "80x", targetPort: 70000}]}
        rollout: enabled
    """)
    assert errors == [
        "istio-mesh:charts: must be a mapping with one of repository, path or oci, e.g. "
        '{path: /srv/istio-{version}/charts}, but YAML read the text "./charts"',
        "istio-mesh:hub: must be text, but YAML read the number 5: quote it",
        'istio-mesh:revisions.a: must be a mapping such as {version: "1.30.2"}, but YAML read the text "1.30.0"',
        'istio-mesh:revisions.b: must be a mapping such as {version: "1.30.2"}, but YAML read nothing (an empty '
        "value)",
        'istio-mesh:revisions.c.values: must be a mapping (indented "key: value" lines), but YAML read a list',
        "istio-mesh:tags.stable: must be text, but YAML read the boolean true: quote it",
        "istio-mesh:tags.canary: must be text, but YAML read the date 2026-01-01: quote it",
        "istio-mesh:namespaces.payments: must be a tag or revision name, or a mapping such as "
        "{revision: stable, strategy: natural}, but YAML read the number 7",
        "istio-mesh:namespaces.checkout.revision: is required but not set",
        'istio-mesh:gateways.ingress.replicas: must be a whole number, but YAML read the text "two"',
        "istio-mesh:gateways.ingress.service: must be a mapping such as {type: LoadBalancer, ports: "
        '[{name: http2, port: 80}]}, but YAML read the text "LoadBalancer"',
        "istio-mesh:gateways.egress.replicas: must be a whole number, but YAML read the number 1.5",
        'istio-mesh:gateways.egress.service.ports: must be a list (one "- " line per item), but YAML read a mapping',
        "istio-mesh:gateways.east: must be a mapping such as {namespace: istio-ingress, revision: stable}, but YAML "
        "read a list",
        "istio-mesh:gateways.west.service.ports[0]: must be a mapping such as {name: http2, port: 80, targetPort: "
        '8080}, but YAML read the text "http"',
        "istio-mesh:gateways.west.service.ports[1].name: must be text, but YAML read the number 80: quote it",
        'istio-mesh:gateways.west.service.ports[1].port: must be a whole number, but YAML read the text "80x"',
        "istio-mesh:gateways.west.service.ports[1].targetPort: must be at most 65535, but is 70000",
        "istio-mesh:rollout: must be a mapping such as {strategy: rolling, concurrency: 4}, but YAML read the text "
        '"enabled"',
    ]
    internal = ("ChartSource", "Revision", "NamespaceBinding", "Gateway", "ServicePort", "Rollout", "instance of")
    assert not [e for e in errors if any(word in e for word in internal)]


def test_whole_numbers_say_what_yaml_read_instead() -> None:
    errors = errors_of_yaml("""
        revisions: {1-30-2: {version: 1.30.2}}
        rollout: {concurrency: .inf, timeoutSeconds: 2026-01-01, drainTimeoutSeconds: [60]}
    """)
    assert errors == [
        "istio-mesh:rollout.concurrency: must be a whole number, but YAML read the number inf",
        "istio-mesh:rollout.timeoutSeconds: must be a whole number, but YAML read the date 2026-01-01",
        "istio-mesh:rollout.drainTimeoutSeconds: must be a whole number, but YAML read a list",
    ]


def test_a_mapping_key_yaml_read_as_a_number_is_named_as_a_key_not_a_list_position() -> None:
    assert errors_of_yaml("revisions: {130: {version: 1.30.0}}") == [
        "istio-mesh:revisions.130: must be text, but YAML read the number 130: quote it",
    ]


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


def test_a_hub_with_a_trailing_or_doubled_slash_is_refused_with_the_fixed_prefix() -> None:
    for hub in ("registry.example.com/istio/", "registry.example.com//istio"):
        with pytest.raises(SpecError) as err:
            load_spec({"hub": hub, "revisions": {"r1": {"version": "1.30.0"}}})
        assert str(err.value.errors[0]) == (
            f'istio-mesh:hub: "{hub}" would make image names like "{hub}/pilot:<version>": '
            'write "registry.example.com/istio"')


def test_an_empty_list_of_gateway_ports_is_refused_with_its_key() -> None:
    spec = load_spec({"revisions": {"r1": {"version": "1.30.0"}},
                      "gateways": {"in": {"namespace": "istio-ingress", "revision": "r1", "service": {"ports": []}}}})
    errors = validate(spec)
    assert [e.key for e in errors] == ["gateways.in.service.ports"]
    assert "at least one port" in errors[0].message


def test_per_namespace_above_the_stack_wide_concurrency_is_refused() -> None:
    assert only_error(with_(rollout={"concurrency": 20, "perNamespace": 30})) == (
        "istio-mesh:rollout.perNamespace: is 30, above rollout.concurrency (20), the limit for the whole stack, "
        "so it could never apply: lower it to at most 20, raise rollout.concurrency, or remove the key"
    )
    assert errors_of(with_(rollout={"concurrency": 20, "perNamespace": 5})) == []
    assert "istio-mesh:rollout.perNamespace: must be at least 1, but is 0" in errors_of(
        with_(rollout={"perNamespace": 0}))
