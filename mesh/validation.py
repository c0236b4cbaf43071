"""Rules across config keys: names, references, precedence traps and Istio's version skew.

Pure functions over a `MeshSpec`. Each returns every problem it finds (not just the first), as
`ConfigError`s that name the key and say what to do, so a bad PR fails its preview with one list.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from mesh.charts import CANARY_SUFFIX, DEPLOYMENT, GATEWAY_KINDS, PROGRAM_OWNED_VALUES, gateway_workload

# Istio's version-skew rules live in one place; the version gate imports `in_place_changes` from here.
from mesh.checks.version_skew import canary_skew
from mesh.checks.version_skew import in_place_changes as in_place_changes
from mesh.istio_vocabulary import DEFAULT_TAG, NEVER_INJECTED_NAMESPACES
from mesh.platform import (
    CONFIGURATION_PROFILES,
    ISTIOD_CNI_KEYS,
    PLATFORMS,
    PLATFORMS_SINCE,
    cni_required_by_profile,
    uses_platforms,
)
from mesh.spec import ConfigError, MeshSpec, SpecError, closest, dns_label_problem

# Longest names that still fit the objects named after them (Service names are DNS labels, 63 chars):
# `istiod-<revision>` and `istiod-revision-tag-<tag>`.
_MAX_REVISION_NAME = 63 - len("istiod-")
_MAX_TAG_NAME = 63 - len("istiod-revision-tag-")

_VERSION_NAME = re.compile(r"^\d+-\d+")
"""Revision names made from a version (`1-30-2`): two of them differ by design, never by a typo."""

_REMOVING = "first move everything that refers to it to another revision (and let its pods move), then drop it"


def validate(spec: MeshSpec, deployed_revisions: Collection[str] | None = None) -> list[ConfigError]:
    """Every rule that needs only the config itself.

    `deployed_revisions` (the revision names last deployed, when the caller knows them) only sharpens the
    hint for a reference to an unknown revision: "you are dropping it" versus "did you mean ...".
    """
    return [
        *_names(spec),
        *_external(spec),
        *_references(spec, deployed_revisions),
        *_gateway_namespaces(spec),
        *_gateway_ports(spec),
        *_gateway_workloads(spec),
        *_gateway_canaries(spec),
        *_canary_skew(spec),
        *_owned_values(spec),
        *_platform(spec),
        *_rollout(spec),
    ]


def validate_or_raise(spec: MeshSpec) -> MeshSpec:
    errors = validate(spec)
    if errors:
        raise SpecError(errors)
    return spec


def _names(spec: MeshSpec) -> list[ConfigError]:
    errors = []
    for name in spec.revisions:
        if problem := dns_label_problem(name, _MAX_REVISION_NAME):
            errors.append(ConfigError(f"revisions.{name}", f"revision name {problem}"))
        elif name == DEFAULT_TAG:
            errors.append(ConfigError(
                f"revisions.{name}",
                '"default" is the name of the default tag, not a revision (installing a revision named '
                '"default" silently retargets it): name the revision after its version, e.g. "1-30-2", '
                "and set `tags.default` to it",
            ))
    for tag in spec.tags:
        if problem := dns_label_problem(tag, _MAX_TAG_NAME):
            errors.append(ConfigError(f"tags.{tag}", f"tag name {problem}"))
        elif tag in spec.revisions and tag != DEFAULT_TAG:  # a revision named "default" is reported above
            errors.append(ConfigError(
                f"tags.{tag}",
                f'"{tag}" is also a revision name; a tag must differ from every revision so labels '
                "stay unambiguous: rename the tag",
            ))
    for ns in spec.namespaces:
        if problem := dns_label_problem(ns, 63):
            errors.append(ConfigError(f"namespaces.{ns}", f"namespace name {problem}"))
        elif ns in NEVER_INJECTED_NAMESPACES:
            errors.append(ConfigError(
                f"namespaces.{ns}",
                f"{ns} is never injected by Istio and cannot be bound: remove it from namespaces",
            ))
    for name, gw in spec.gateways.items():
        if problem := dns_label_problem(name, 63):
            errors.append(ConfigError(f"gateways.{name}", f"gateway name {problem}"))
        if problem := dns_label_problem(gw.namespace, 63):
            errors.append(ConfigError(f"gateways.{name}.namespace", f"namespace name {problem}"))
    return errors


def _external(spec: MeshSpec) -> list[ConfigError]:
    """A revision the stack installs needs a version; one installed outside it (`external`) takes neither a version
    nor values, since the stack renders no chart for it and cannot change it. What pins a chart version to an own
    revision (gateways, istio-cni) needs one such revision."""
    errors = []
    for name, rev in sorted(spec.revisions.items()):
        key = f"revisions.{name}"
        if not rev.external:
            if rev.version is None:
                errors.append(ConfigError(
                    f"{key}.version",
                    'is required but not set: give the version the stack installs, e.g. "1.30.2", or set '
                    f"{key}.external to true for a revision installed outside the stack (a managed control plane's "
                    "channel, another team's istiod)",
                ))
            continue
        if rev.version is not None:
            errors.append(ConfigError(
                f"{key}.version",
                f"is set, but revision {name} is external: its version is whatever its installer runs (read from the "
                "cluster at preview), and the stack cannot change it: remove the key (upgrade it where it is "
                f"installed), or remove {key}.external for a revision the stack installs under another name",
            ))
        if rev.values:
            errors.append(ConfigError(
                f"{key}.values",
                f"is set, but revision {name} is external: the stack renders no istiod chart for it, so no value "
                "would ever reach it: remove values, and configure it where it is installed",
            ))
    if spec.installed:
        return errors
    why = "the stack installs no revision whose version could pick"
    for name in sorted(spec.gateways):
        errors.append(ConfigError(
            f"gateways.{name}",
            f"{why} the gateway chart's version (every revision is external): add a revision the stack installs "
            "(its version picks the chart), or leave the gateway to whoever installs its revision",
        ))
    if spec.cni.enabled:
        errors.append(ConfigError(
            "cni.enabled",
            f"is true, but {why} the cni chart's version (every revision is external): add a revision the stack "
            "installs, or set cni.enabled to false (the external install's node agent stays as it is)",
        ))
    return errors


def _references(spec: MeshSpec, deployed: Collection[str] | None) -> list[ConfigError]:
    """Tags point at revisions; bindings and gateways point at tags or revisions."""
    errors = []
    for tag, revision in spec.tags.items():
        if revision not in spec.revisions:
            errors.append(ConfigError(
                f"tags.{tag}",
                f'points at revision "{revision}", which is not in revisions'
                f"{_unknown_hint(revision, spec.revisions, deployed)}",
            ))
    refs = [(f"namespaces.{ns}", b.revision) for ns, b in spec.namespaces.items()]
    refs += [(f"gateways.{name}.revision", g.revision) for name, g in spec.gateways.items()]
    refs += [(f"gateways.{name}.canary.revision", g.canary.revision) for name, g in spec.gateways.items() if g.canary]
    for key, target in refs:
        if target not in spec.revisions and target not in spec.tags:
            errors.append(ConfigError(
                key, f'points at "{target}", which is neither a tag nor a revision'
                     f"{_unknown_hint(target, [*spec.revisions, *spec.tags], deployed)}",
            ))
    return errors


def _unknown_hint(target: str, known: Collection[str], deployed: Collection[str] | None) -> str:
    """The likeliest fix for a reference to an unknown name: a dropped revision's order of work, or a typo's match.

    A name that was deployed and is gone from revisions was dropped. Without that history, a name close to a
    known one is taken for a typo (version-made names excepted: `1-30-2` and `1-31-0` are two revisions), and
    any other may be a dropped revision, so the order of work is offered conditionally. The program validates
    before registering anything, when the last deployment is not yet known, so it relies on that guess.
    """
    listed = f" (known: {', '.join(sorted(known)) or 'none'})"
    if deployed is not None and target in deployed:
        return f'{listed}; this change removes revision "{target}": {_REMOVING}'
    guess = closest(target, [k for k in known if not (_VERSION_NAME.match(k) and _VERSION_NAME.match(target))])
    if guess:
        return f'{listed}: did you mean "{guess}"?'
    if deployed is None:
        return f"{listed}; if you are removing that revision, {_REMOVING}"
    return f"{listed}: declare it first, or use one of those"


def _gateway_namespaces(spec: MeshSpec) -> list[ConfigError]:
    """Gateway pods get their proxy only by injection, and follow a bound namespace's label over their own."""
    errors = []
    for name, gw in spec.gateways.items():
        if gw.namespace in NEVER_INJECTED_NAMESPACES:
            errors.append(ConfigError(
                f"gateways.{name}.namespace",
                f"is {gw.namespace}, where Istio never injects (its injection webhooks skip "
                f"{', '.join(sorted(NEVER_INJECTED_NAMESPACES))}), so the gateway's pods would never get their proxy: "
                "put the gateway in a namespace of its own, e.g. istio-ingress",
            ))
        binding = spec.namespaces.get(gw.namespace)
        if binding is not None and binding.revision != gw.revision:
            errors.append(ConfigError(
                f"gateways.{name}.revision",
                f'is "{gw.revision}" but its namespace {gw.namespace} is bound to "{binding.revision}", and a '
                "namespace binding overrides a pod's revision label: pin the gateway to the same tag or revision "
                "as its namespace, or move the gateway to a namespace that is not in namespaces",
            ))
    return errors


def _gateway_ports(spec: MeshSpec) -> list[ConfigError]:
    """Kubernetes refuses a Service that repeats a port name or a port+protocol pair, which `up` would meet halfway."""
    errors = []
    for name, gw in spec.gateways.items():
        names: dict[str, int] = {}
        numbers: dict[tuple[int, str], int] = {}
        if gw.service.ports == []:
            errors.append(ConfigError(
                f"gateways.{name}.service.ports",
                "is an empty list, and a Service needs at least one port: list the ports, or remove the key for "
                "the chart's defaults (15021, 80, 443)",
            ))
        for i, port in enumerate(gw.service.ports or []):
            key = f"gateways.{name}.service.ports[{i}]"
            if (first := names.setdefault(port.name, i)) != i:
                errors.append(ConfigError(
                    f"{key}.name",
                    f'"{port.name}" is also the name of ports[{first}]: give each port of the Service its own name',
                ))
            if (first := numbers.setdefault((port.port, port.protocol), i)) != i:
                errors.append(ConfigError(
                    f"{key}.port",
                    f"{port.port}/{port.protocol} is also the port of ports[{first}], and a Service serves a port "
                    "number once per protocol: change the port or remove one of the two entries",
                ))
    return errors


def _gateway_workloads(spec: MeshSpec) -> list[ConfigError]:
    """The workload the chart renders (`values.name`, `values.kind`) is the one the MeshRollout moves: it must be
    one the chart can render, one gateway's alone, and a DaemonSet takes neither replicas nor a canary (both
    count pods, and a DaemonSet runs one on every node)."""
    errors = []
    owners: dict[tuple[str, str], list[str]] = {}
    for name, gw in sorted(spec.gateways.items()):
        owners.setdefault((gw.namespace, gateway_workload(name, gw)), []).append(name)
        key = f"gateways.{name}"
        if "name" in gw.values and (problem := dns_label_problem(str(gw.values["name"]), 63)):
            errors.append(ConfigError(f"{key}.values.name", f"the gateway's workload and Service name {problem}"))
        kind = gw.values.get("kind", DEPLOYMENT)
        if kind not in GATEWAY_KINDS:
            guess = closest(kind, GATEWAY_KINDS) if isinstance(kind, str) else None
            errors.append(ConfigError(
                f"{key}.values.kind",
                f"must be exactly one of {', '.join(GATEWAY_KINDS)} (what the gateway chart renders), but is "
                f"{kind!r}" + (f": did you mean {guess}?" if guess else ""),
            ))
        if kind != "DaemonSet":
            continue
        if "replicas" in gw.model_fields_set:
            errors.append(ConfigError(
                f"{key}.replicas",
                "is set, but values.kind is DaemonSet, which runs one pod on every node the pods may schedule on "
                f"and has no replica count: remove {key}.replicas, or remove values.kind for a Deployment",
            ))
        if gw.canary is not None:
            errors.append(ConfigError(
                f"{key}.canary",
                "takes its share of the traffic by replica count, but values.kind is DaemonSet, which runs one pod "
                f"on every node, so no share can be set: remove {key}.canary and move the gateway with its "
                "revision, or remove values.kind to canary a Deployment gateway",
            ))
    for (ns, workload), names in sorted(owners.items()):
        for name in names if len(names) > 1 else []:
            others = ", ".join(f'"{other}"' for other in names if other != name)
            errors.append(ConfigError(
                f"gateways.{name}.values.name" if "name" in spec.gateways[name].values else f"gateways.{name}",
                f"renders {workload} (its workload and Service) in {ns}, and gateway {others} renders {workload} in "
                f"{ns} too, so the two releases would fight over the same objects: give each its own values.name, "
                "or put them in different namespaces",
            ))
    return errors


def _gateway_canaries(spec: MeshSpec) -> list[ConfigError]:
    """A canary is a second Deployment `<gateway>-canary` next to the gateway, injected by another revision."""
    errors = []
    known = {*spec.revisions, *spec.tags}
    workloads = {(gw.namespace, gateway_workload(name, gw)): name for name, gw in spec.gateways.items()}
    for name, gw in sorted(spec.gateways.items()):
        if gw.canary is None:
            continue
        key = f"gateways.{name}.canary"
        deployment = gateway_workload(name, gw) + CANARY_SUFFIX
        if gw.canary.revision in known and gw.revision in known:  # unknown names are reported by _references
            canary, main = spec.resolve(gw.canary.revision), spec.resolve(gw.revision)
            if canary == main:
                errors.append(ConfigError(
                    f"{key}.revision",
                    f'is "{gw.canary.revision}", which is revision {canary}, the one the gateway already runs '
                    f'("{gw.revision}"): point the canary at the revision to try, or, to promote it, set '
                    f"gateways.{name}.revision to it and remove gateways.{name}.canary",
                ))
        if (binding := spec.namespaces.get(gw.namespace)) is not None:
            errors.append(ConfigError(
                key,
                f'cannot run in {gw.namespace}, which is bound to "{binding.revision}": a namespace binding '
                "overrides a pod's revision label, so the canary's pods would get the namespace's revision, not "
                f'"{gw.canary.revision}": move the gateway to a namespace that is not in namespaces, or upgrade '
                "it with its namespace",
            ))
        if problem := dns_label_problem(deployment, 63):
            errors.append(ConfigError(key, f"the canary's Deployment name {problem}: shorten the gateway's name"))
        if (other := workloads.get((gw.namespace, deployment))) is not None:
            errors.append(ConfigError(
                key,
                f'would create Deployment {deployment} in {gw.namespace}, which is gateway "{other}"\'s: '
                "rename one of the two gateways",
            ))
    return errors


def _owned_values(spec: MeshSpec) -> list[ConfigError]:
    """Values the program derives (revision name, image tag, replicas) must come from their own keys."""
    sources = [(f"revisions.{n}", "istiod", r.values) for n, r in spec.revisions.items() if not r.external]
    sources += [(f"gateways.{n}", "gateway", g.values) for n, g in spec.gateways.items()]
    errors = []
    for key, chart, values in sources:
        for path in PROGRAM_OWNED_VALUES[chart]:
            if _get(values, path) is not None:
                errors.append(ConfigError(
                    f"{key}.values.{'.'.join(path)}",
                    "is set by the program from the revision's name, version and replicas: remove it from "
                    "values and change the corresponding key instead",
                ))
    return errors


def _canary_skew(spec: MeshSpec) -> list[ConfigError]:
    """Revisions side by side may be at most two minors apart (the rule is `mesh.checks.version_skew`'s)."""
    return canary_skew(spec.installed)


def ownership_changes(previous: Mapping[str, str], previous_external: Collection[str],
                      current: Mapping[str, str], current_external: Collection[str]) -> list[ConfigError]:
    """A revision keeps its owner (previous: as last deployed): one the stack installed made external would have
    its istiod deleted under its pods, and an external one made the stack's would have its installer's objects
    (`istiod-<r>`, `istio-sidecar-injector-<r>`) taken over by the chart of the same names."""
    errors = []
    if previous and not current and current_external:
        errors.append(ConfigError(
            "revisions",
            f"declares only external revisions, but the stack installed {', '.join(sorted(previous))}: without a "
            "revision of its own it would delete its base chart, Istio's CRDs, and with them every Istio resource "
            "in the cluster: keep one revision the stack installs; to hand the CRDs over, first remove the base "
            "chart from the state without deleting it (`pulumi state delete` of istio-base and its objects)",
        ))
    for name in sorted(set(previous) & set(current_external)):
        errors.append(ConfigError(
            f"revisions.{name}.external",
            f"is true, but the stack installed revision {name} (version {previous[name]}): the change would delete "
            "its istiod while pods run it: keep it as it is; to move to an istiod installed elsewhere, declare that "
            "one under its own name with external: true, bind namespaces to it, then drop this revision",
        ))
    for name in sorted(set(previous_external) & set(current)):
        errors.append(ConfigError(
            f"revisions.{name}.version",
            f"is set, but revision {name} was external (installed outside the stack): installing the istiod chart "
            f"as {name} would take over its installer's objects of the same names: keep {name} external, or "
            "install the stack's own revision under another name and move namespaces to it",
        ))
    return errors


def _get(values: Mapping[str, object], path: tuple[str, ...]) -> object:
    node: object = values
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _platform(spec: MeshSpec) -> list[ConfigError]:
    """`profile` names a platform every revision's charts ship; CNI is on wherever a revision or the platform
    leaves traffic redirection to it (otherwise injected pods would start with no redirection at all)."""
    errors = []
    allowed = ", ".join(PLATFORMS)
    if spec.profile is not None and spec.profile not in PLATFORMS:
        if spec.profile in CONFIGURATION_PROFILES:
            why = (f'"{spec.profile}" is one of Istio\'s configuration profiles, which change what this program '
                   "derives (revisions, injection, gateways); profile names a platform")
        else:
            why = f'"{spec.profile}" is not a platform profile the Istio charts ship'
        guess = closest(spec.profile, PLATFORMS)
        hint = f": did you mean {guess}?" if guess else ""
        errors.append(ConfigError(
            "profile", f"{why}: must be exactly one of {allowed}, or remove the key{hint}",
        ))
    elif spec.profile is not None:
        since = ".".join(map(str, PLATFORMS_SINCE))
        errors += [
            ConfigError(
                f"revisions.{name}.version",
                f"is {rev.version}, whose charts have no platform profiles (global.platform, from Istio {since}), "
                f"so profile {spec.profile} cannot be applied to it: upgrade the revision to {since} or later first, "
                "or remove profile",
            )
            for name, rev in sorted(spec.revisions.items())
            if rev.version is not None and not rev.external and not uses_platforms(rev.version)
        ]
    errors += [
        ConfigError(
            f"cni.values.{'.'.join(path)}",
            "is set by the program (istio-cni runs the newest revision's version, on the platform named by profile): "
            "remove it from values and change revisions or profile instead",
        )
        for path in PROGRAM_OWNED_VALUES["cni"]
        if _get(spec.cni.values, path) is not None
    ]
    if spec.cni.enabled:
        return errors
    if cni_required_by_profile(spec):
        errors.append(ConfigError(
            "cni.enabled",
            f"is false, but profile {spec.profile} turns on pilot.cni.enabled in every revision (the platform grants "
            "no NET_ADMIN to istio-init), so pods would get no traffic redirection: set cni.enabled to true",
        ))
    for name, rev in sorted(spec.revisions.items()):
        for path in ISTIOD_CNI_KEYS:
            if _get(rev.values, path) is True:
                errors.append(ConfigError(
                    f"revisions.{name}.values.{'.'.join(path)}",
                    "is true, so this revision's pods get no istio-init and rely on the istio-cni node agent, but "
                    "cni.enabled is false: set cni.enabled to true (which also sets this value), or remove it",
                ))
    return errors


def _rollout(spec: MeshSpec) -> list[ConfigError]:
    """A per-namespace cap above the stack-wide one could never be reached: almost surely a mix-up of the two."""
    cap, total = spec.rollout.per_namespace, spec.rollout.concurrency
    if cap is not None and cap > total:
        return [ConfigError(
            "rollout.perNamespace",
            f"is {cap}, above rollout.concurrency ({total}), the limit for the whole stack, so it could never "
            f"apply: lower it to at most {total}, raise rollout.concurrency, or remove the key",
        )]
    return []
