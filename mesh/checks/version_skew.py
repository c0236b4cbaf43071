"""Rule 2: Istio's version skew, owned here (validation, the version gate and the review all read these).

- Revisions side by side: at most `MAX_CANARY_MINORS` apart (a canary may skip one minor), one major.
- In place: a revision's version moves at most `MAX_IN_PLACE_MINORS` at a time (two minors only by revision).
- Data plane: a proxy may be at most `PROXY_MINORS_BEHIND` minor older than the istiod it talks to, never newer.
  Proxies talk to the istiod of the revision that injected them, so only an in-place change moves them out of
  skew; the pods that would be are named with where they run.
- istio-cni (it follows the newest revision) within `CNI_MINORS` of every revision.
- Base and CRDs (at the newest revision's version) serve every revision: none newer than base, none more than
  `MAX_CANARY_MINORS` older.
Sources: istio.io "Supported releases" (control plane / data plane skew), the canary and in-place upgrade pages.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from mesh.checks import Finding, passed, refusal, warning
from mesh.checks.steps import Step
from mesh.spec import ConfigError, parse_version

RULE = "version-skew"
MAX_CANARY_MINORS = 2
"""A canary revision may skip one minor: at most n+2 over the oldest revision."""
MAX_IN_PLACE_MINORS = 1
"""An existing revision's version may move one minor at a time."""
PROXY_MINORS_BEHIND = 1
"""A proxy may be one minor older than its istiod, never newer."""
CNI_MINORS = 1
"""istio-cni 1.x works with control planes 1.x-1 to 1.x+1."""

_TAG_VERSION = re.compile(r":(\d+\.\d+\.\d+)")


def canary_skew(versions: Mapping[str, str]) -> list[ConfigError]:
    """Revisions side by side (name -> version) may be at most two minors apart, within one major."""
    if not versions:
        return []
    parsed = {name: parse_version(v) for name, v in versions.items()}
    oldest_name = min(parsed, key=lambda n: parsed[n])
    oldest = parsed[oldest_name]
    errors = []
    for name, v in sorted(parsed.items()):
        if v.major != oldest.major:
            errors.append(ConfigError(
                f"revisions.{name}.version",
                f"{v} is a different major version than revision {oldest_name} ({oldest}); "
                "Istio supports revision upgrades within one major version only",
            ))
        elif v.minor - oldest.minor > MAX_CANARY_MINORS:
            errors.append(ConfigError(
                f"revisions.{name}.version",
                f"{v} is {v.minor - oldest.minor} minors ahead of revision {oldest_name} ({oldest}); a canary "
                f"may be at most {MAX_CANARY_MINORS} minors ahead of the oldest revision: upgrade through an "
                f"intermediate revision (1.{oldest.minor + MAX_CANARY_MINORS}.x) first",
            ))
    return errors


def in_place_changes(previous: Mapping[str, str], current: Mapping[str, str]) -> list[ConfigError]:
    """An existing revision's version may change by at most one minor (previous: as last deployed)."""
    errors = []
    for name, new in sorted(current.items()):
        old = previous.get(name)
        if old is None or old == new:
            continue
        o, n = parse_version(old), parse_version(new)
        if o.major != n.major or abs(n.minor - o.minor) > MAX_IN_PLACE_MINORS:
            errors.append(ConfigError(
                f"revisions.{name}.version",
                f"changes revision {name} in place from {o} to {n}, more than {MAX_IN_PLACE_MINORS} minor at a "
                "time: keep this revision's version and add a new revision at the new version instead "
                "(canary upgrade), or step through each minor",
            ))
    return errors


@dataclass(frozen=True)
class ProxyPod:
    """A live injected pod: the revision that injected it and the version of its proxy image."""

    namespace: str
    name: str
    revision: str
    proxy_version: str


def proxy_version(image: str | None) -> str | None:
    """`docker.io/istio/proxyv2:1.30.2-distroless` -> `1.30.2`; None for a digest or another tag."""
    match = _TAG_VERSION.search(image or "")
    return match.group(1) if match else None


def _minor_distance(proxy: str, istiod: str) -> int:
    p, i = parse_version(proxy), parse_version(istiod)
    return (i.major - p.major) * 100 + i.minor - p.minor


def out_of_skew(proxy: str, istiod: str) -> bool:
    """A proxy at version `proxy` talking to an istiod at `istiod` that Istio does not support: more than
    `PROXY_MINORS_BEHIND` minor older, or newer."""
    behind = _minor_distance(proxy, istiod)
    return behind > PROXY_MINORS_BEHIND or behind < 0


def check(versions: Mapping[str, str], deployed: Mapping[str, str], steps: Iterable[Step], cni: str | None,
          pods: Iterable[ProxyPod] | None, restarted: Collection[str] = (),
          kept: Mapping[tuple[str, str], str] | None = None) -> list[Finding]:
    """`versions`: revision -> version after the change; `deployed`: as last deployed; `cni`: istio-cni's version
    after it (None: off); `pods`: the live injected pods (None when the cluster was not read); `restarted`: the
    namespaces whose workloads this `up` restarts (their out-of-skew pods are replaced by it); `kept`: (namespace,
    pod) -> why no restart changes its proxy (a proxy image set by hand), so neither this `up` nor a later restart
    brings it into skew."""
    findings = [refusal(RULE, e.key, e.message) for e in canary_skew(versions)]
    findings += [refusal(RULE, e.key, e.message) for e in in_place_changes(deployed, versions)]
    if versions and not findings:
        spread = sorted({str(parse_version(v)) for v in versions.values()}, key=parse_version)
        findings.append(passed(RULE, "revisions", f"revisions {', '.join(spread)} are within {MAX_CANARY_MINORS} "
                               f"minors of each other; base and CRDs at {spread[-1]} serve them all",
                               versions=spread))
    for name, version in sorted(versions.items()) if cni else []:
        assert cni is not None
        if abs(_minor_distance(version, cni)) > CNI_MINORS:
            findings.append(warning(
                RULE, "cni.enabled",
                f"istio-cni {cni} (it follows the newest revision) is more than {CNI_MINORS} minor from revision "
                f"{name} ({version}), which Istio does not support: move {name}'s workloads to a newer revision and "
                "drop it first, or step the canary one minor at a time", cni=cni, revision=name))
    for step in steps:
        if step.how == "in place" and pods is not None:
            findings += _proxies(step, pods, restarted, kept or {})
    return findings


def _proxies(step: Step, pods: Iterable[ProxyPod], restarted: Collection[str],
             kept: Mapping[tuple[str, str], str]) -> list[Finding]:
    """The pods an in-place change leaves on proxies their revision's new istiod does not support, per namespace
    with what becomes of them: replaced by this `up`, to restart after it, or kept on their own proxy by a restart."""
    name = step.key.removeprefix("revisions.")
    out: dict[str, dict[str, int]] = {}
    names: dict[str, list[str]] = {}
    fates: dict[str, dict[str, int]] = {}
    for pod in pods:
        if pod.revision != name:
            continue
        behind = _minor_distance(pod.proxy_version, step.after)
        if behind > PROXY_MINORS_BEHIND or behind < 0:
            out.setdefault(pod.namespace, {}).setdefault(pod.proxy_version, 0)
            out[pod.namespace][pod.proxy_version] += 1
            names.setdefault(pod.namespace, []).append(pod.name)
            why = kept.get((pod.namespace, pod.name))
            fate = (f"a restart keeps their proxy ({why}): change that to move them" if why
                    else "this up restarts them" if pod.namespace in restarted else "restart them after the up")
            fates.setdefault(pod.namespace, {}).setdefault(fate, 0)
            fates[pod.namespace][fate] += 1
    if not out:
        return [passed(RULE, f"{step.key}.version", f"every pod of {name} runs a proxy istiod {step.after} supports")]
    where = "; ".join(f"{ns}: {sum(v.values())} pods (proxy {', '.join(sorted(v))}; {_fates(fates[ns])})"
                      for ns, v in sorted(out.items()))
    return [warning(
        RULE, f"{step.key}.version",
        f"istiod of {name} moves in place {step.before} -> {step.after}, and a proxy may be at most "
        f"{PROXY_MINORS_BEHIND} minor older than its istiod, never newer: out of skew until restarted: {where}",
        pods={ns: sorted(n) for ns, n in sorted(names.items())},
        restarted=sorted(ns for ns in out if ns in restarted and any(
            (ns, pod) not in kept for pod in names[ns])),
        kept={ns: {pod: kept[(ns, pod)] for pod in sorted(n) if (ns, pod) in kept}
              for ns, n in sorted(names.items()) if any((ns, pod) in kept for pod in n)})]


def _fates(counts: Mapping[str, int]) -> str:
    """`this up restarts them`, or with several fates in one namespace how many pods each."""
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n}: {fate}" for fate, n in sorted(counts.items()))
