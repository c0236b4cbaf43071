"""The mesh as data: pydantic models for the stack config, and the lookups derived from it.

Everything here is pure: it takes the config values Pulumi hands us and returns models. Shape errors
(wrong types, unknown keys, bad names) are reported by pydantic here; rules across keys (references,
version skew) live in `mesh.validation`. Both report `ConfigError`s that name the full config key.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar, Literal

import semver
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from mesh.istio_vocabulary import DEFAULT_TAG, ROLLING, Strategy

PROJECT = "istio-mesh"
"""The Pulumi project name; config keys are `istio-mesh:<key>`."""

DEFAULT_HUB = "docker.io/istio"
DEFAULT_CHART_REPOSITORY = "https://istio-release.storage.googleapis.com/charts"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_MAPPING = 'a mapping (indented "key: value" lines)'


@dataclass(frozen=True)
class ConfigError:
    """One problem with the stack config: the full key path, what is wrong, and how to fix it."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{PROJECT}:{self.key}: {self.message}"


class SpecError(Exception):
    """All config problems found, reported together so one `pulumi preview` shows every fix needed."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        lines = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f"the stack config has {len(errors)} problem(s):\n{lines}")


def dns_label_problem(name: str, max_len: int) -> str | None:
    """Why `name` cannot be used in Istio object names, or None when it can."""
    if len(name) > max_len:
        return f'"{name}" is {len(name)} characters; at most {max_len} fit into the objects named after it'
    if not _DNS_LABEL.match(name):
        return (
            f'"{name}" is not a DNS-1123 label: use lower-case letters, digits and "-" (no dots), '
            'starting and ending with a letter or digit, e.g. "1-30-2" or "canary"'
        )
    return None


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice `name` most likely misspells (case aside), for a "did you mean" hint; None when none is close."""
    by_folded = {choice.casefold(): choice for choice in choices}
    match = difflib.get_close_matches(name.casefold(), list(by_folded), n=1)
    return by_folded[match[0]] if match else None


def parse_version(version: str) -> semver.Version:
    """Istio versions are plain semver (`1.30.2`, `1.31.0-beta.1`)."""
    return semver.Version.parse(version)


class _Model(BaseModel):
    """Config models accept camelCase keys (as written in stack YAML) and reject unknown keys."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)
    shape: ClassVar[str] = _MAPPING
    """How to write the object in stack YAML, for the message when YAML read something else there."""


class ChartSource(_Model):
    """Where the `base`, `istiod` and `gateway` charts come from: exactly one of the three."""

    shape = "a mapping with one of repository, path or oci, e.g. {path: /srv/istio-{version}/charts}"
    repository: str | None = None
    """A Helm repository URL (the official one by default)."""
    path: str | None = None
    """A local mirror: a directory holding `base/`, `istiod/`, `gateway/`; `{version}` is replaced, `~` expanded."""
    oci: str | None = None
    """An OCI registry prefix, e.g. `oci://registry.example.com/istio`; charts are `<oci>/<chart>:<version>`."""

    @model_validator(mode="after")
    def _one_source(self) -> ChartSource:
        given = [k for k in ("repository", "path", "oci") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"set only one of repository, path, oci (got {', '.join(given)})")
        if self.oci and not self.oci.startswith("oci://"):
            raise ValueError(f'oci must start with "oci://" (got "{self.oci}")')
        return self


class RevisionSpec(_Model):
    """One istiod control plane (Sail's IstioRevision): installed by the stack (`version`, `values`), or
    `external`, installed by someone else (a managed control plane's channel, another team's istiod), which the
    stack only binds namespaces, gateways and tags to."""

    shape = 'a mapping such as {version: "1.30.2"}'
    version: str | None = None
    """Required unless `external`; an external revision's version is read from the cluster."""
    values: dict[str, Any] = Field(default_factory=dict)
    """Passed through to the istiod chart, merged over what the program sets."""
    external: bool = False
    """True: the stack installs nothing for it and never deletes it (mesh.validation refuses version and values)."""

    @field_validator("version")
    @classmethod
    def _semver(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            parse_version(v)
        except ValueError:
            raise ValueError(f'"{v}" is not a semantic version such as "1.30.2"') from None
        return v


class BindingSpec(_Model):
    """Which tag or revision a namespace's new pods get, and how its running pods move."""

    shape = "a tag or revision name, or a mapping such as {revision: stable, strategy: natural}"
    revision: str
    """A tag or a revision name."""
    strategy: Strategy | None = None
    """`rolling` restarts workloads now, `natural` waits for their next deploy, `none` only labels."""


class ServicePortSpec(_Model):
    shape = "a mapping such as {name: http2, port: 80, targetPort: 8080}"
    name: str
    port: int = Field(ge=1, le=65535)
    target_port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"


class GatewayServiceSpec(_Model):
    shape = "a mapping such as {type: LoadBalancer, ports: [{name: http2, port: 80}]}"
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "LoadBalancer"
    ports: list[ServicePortSpec] | None = None
    """None keeps the chart's default ports (15021, 80, 443)."""


class GatewayCanarySpec(_Model):
    """A second Deployment of a gateway, on another revision, behind the gateway's own Service."""

    shape = "a mapping such as {revision: canary, replicas: 1}"
    revision: str
    """A tag or a revision name; promoting makes it the gateway's `revision` and removes `canary`."""
    replicas: int = Field(default=1, ge=1)
    """Its share of the traffic is replicas / (replicas + the gateway's replicas)."""


class GatewaySpec(_Model):
    """A gateway Deployment+Service from the `gateway` chart, pinned to a tag or revision."""

    shape = "a mapping such as {namespace: istio-ingress, revision: stable}"
    namespace: str
    revision: str
    """A tag or a revision name; pinning keeps a new revision from taking over the gateway by surprise."""
    replicas: int = Field(default=1, ge=1)
    service: GatewayServiceSpec = Field(default_factory=GatewayServiceSpec)
    strategy: Strategy | None = None
    values: dict[str, Any] = Field(default_factory=dict)
    canary: GatewayCanarySpec | None = None
    """None: one Deployment. Set: a second one on the canary revision, selected by the same Service."""


class RolloutDefaults(_Model):
    """Defaults for moving running pods after a binding changes."""

    shape = "a mapping such as {strategy: rolling, concurrency: 4}"
    strategy: Strategy = ROLLING
    concurrency: int = Field(default=4, ge=1)
    """Across the whole stack: how many workloads restart at the same time in one `up`."""
    per_namespace: int | None = Field(default=None, ge=1)
    """At most this many of them in one namespace (unset: only `concurrency` limits)."""
    timeout_seconds: int = Field(default=600, ge=1)
    """Per workload: how long a restarted workload may take to become ready."""
    drain_timeout_seconds: int = Field(default=0, ge=0)
    """How long removing a revision waits for its pods to go before refusing."""


class CniSpec(_Model):
    """The istio-cni node agent (chart `cni`): pods get their traffic redirection from it, not from istio-init."""

    shape = "a mapping such as {enabled: true}"
    enabled: bool = False
    values: dict[str, Any] = Field(default_factory=dict)
    """Passed through to the cni chart, merged over what the program sets."""


class MeshSpec(_Model):
    """The whole stack config (Sail's Istio resource, plus bindings and gateways)."""

    charts: ChartSource = Field(default_factory=ChartSource)
    hub: str = DEFAULT_HUB
    """Image registry for istiod and proxies (`global.hub`); point it at your mirror when air-gapped."""
    revisions: dict[str, RevisionSpec]
    tags: dict[str, str] = Field(default_factory=dict)
    namespaces: dict[str, BindingSpec] = Field(default_factory=dict)
    gateways: dict[str, GatewaySpec] = Field(default_factory=dict)
    rollout: RolloutDefaults = Field(default_factory=RolloutDefaults)
    profile: str | None = None
    """A platform profile (`openshift`, `gke`, ...), passed to every chart as `global.platform`."""
    cni: CniSpec = Field(default_factory=CniSpec)

    @field_validator("profile")
    @classmethod
    def _no_platform(cls, v: str | None) -> str | None:
        """Empty (Pulumi.yaml's default) means no platform profile."""
        return v or None

    @field_validator("hub")
    @classmethod
    def _image_prefix(cls, v: str) -> str:
        """Charts write images as `<hub>/<image>:<tag>`, so hub is a bare registry path, never a URL."""
        examples = f'"{DEFAULT_HUB}" or "registry.example.com/istio"'
        if not v.strip():
            raise ValueError(f"is empty: set it to an image registry prefix such as {examples}, or remove the key "
                             f'for the default ("{DEFAULT_HUB}")')
        if scheme := _URL_SCHEME.match(v):
            bare = v[scheme.end():].strip("/")
            fix = f'write "{bare}"' if bare else f"write a registry prefix such as {examples}"
            raise ValueError(f'"{v}" is a URL, but hub is an image name prefix (images are <hub>/pilot:<version>, '
                             f"with no scheme): {fix}")
        if v.endswith("/") or "//" in v or any(c.isspace() for c in v):
            bare = "/".join(part for part in v.strip().split("/") if part)
            raise ValueError(f'"{v}" would make image names like "{v}/pilot:<version>": write "{bare}"')
        return v

    @field_validator("namespaces", mode="before")
    @classmethod
    def _short_form(cls, v: Any) -> Any:
        """`payments: canary` is short for `payments: {revision: canary}`."""
        if isinstance(v, Mapping):
            return {k: {"revision": b} if isinstance(b, str) else b for k, b in v.items()}
        return v

    def resolve(self, target: str) -> str:
        """The revision a tag or revision name stands for (the name itself for a revision)."""
        return self.tags.get(target, target)

    @property
    def default_revision(self) -> str:
        """`defaultRevision` for the base chart: the default tag's revision, or "" when there is none."""
        return self.tags.get(DEFAULT_TAG, "")

    @property
    def installed(self) -> dict[str, str]:
        """Revision -> version of the revisions the stack installs (every one but the external ones)."""
        return {name: r.version for name, r in self.revisions.items() if not r.external and r.version is not None}

    @property
    def external(self) -> list[str]:
        """The revisions installed outside the stack, which it binds to but never installs or deletes."""
        return sorted(name for name, r in self.revisions.items() if r.external)

    @property
    def newest_version(self) -> str:
        """Base (CRDs, cluster roles) follows the newest installed revision ("" when the stack installs none:
        then it installs no base either, the external install's stays)."""
        versions = [parse_version(v) for v in self.installed.values()]
        return str(max(versions)) if versions else ""

    def strategy_of(self, binding: BindingSpec | GatewaySpec) -> Strategy:
        return binding.strategy or self.rollout.strategy


def _key(loc: tuple[int | str, ...], data: Any) -> str:
    """pydantic's error location as a `--path` style config key (`gateways.ingress.service.ports[1].name`).

    The input decides between a list position (`[1]`) and a mapping key that YAML read as a number (`.130`).
    """
    key, node = "", data
    for part in loc:
        if part == "[key]":  # the mapping key itself is bad: the key names itself
            continue
        if isinstance(node, list):
            key += f"[{part}]"
            node = node[int(part)]
        else:
            key += f".{part}" if key else str(part)
            node = node.get(part) if isinstance(node, Mapping) else None
    return key


def load_spec(config: Mapping[str, Any]) -> MeshSpec:
    """Build the spec from raw config values (key -> decoded YAML), or raise SpecError naming each bad key."""
    data = {k: v for k, v in config.items() if v is not None}
    if "revisions" not in data:
        raise SpecError([ConfigError("revisions", "is not set: declare at least one revision, e.g. "
                                     "`pulumi config set --path 'revisions.1-30-2.version' 1.30.2`")])
    try:
        return MeshSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([ConfigError(_key(e["loc"], data), _message(e)) for e in exc.errors()]) from None


_SHAPES = {model.__name__: model.shape for model in _Model.__subclasses__()}
"""Keyed by the class name pydantic reports for `model_type` errors, so no class name reaches the user."""

_EXPECTED = {
    "string_type": "text",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "finite_number": "a whole number",
    "dict_type": _MAPPING,
    "list_type": 'a list (one "- " line per item)',
}
"""What each pydantic type error expected, in the words of a stack file's author."""


def _yaml_read(value: Any) -> str:
    """What YAML made of the value the user wrote (unquoted `1.30` is the number 1.3, `2026-01-01` a date)."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    if isinstance(value, str):
        return f'the text "{value}"'
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _message(error: Mapping[str, Any]) -> str:
    """One pydantic error as what was found, what is expected, and the fix; allowed values exactly as written."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "is not a known setting: check the spelling against Pulumi.yaml's config block"
    if kind == "missing":
        return "is required but not set"
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", ctx["expected"])
        message = f"must be exactly one of {', '.join(allowed)}, but YAML read {_yaml_read(value)}"
        guess = closest(value, allowed) if isinstance(value, str) else None
        return f"{message}: did you mean {guess}?" if guess else message
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, but is {value}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}, but is {value}"
    if kind == "model_type":
        return f"must be {_SHAPES[ctx['class_name']]}, but YAML read {_yaml_read(value)}"
    if kind in _EXPECTED:
        message = f"must be {_EXPECTED[kind]}, but YAML read {_yaml_read(value)}"
        if kind == "string_type" and isinstance(value, int | float | date):
            example = ' ("1.30.0")' if error["loc"][-1] == "version" else ""
            message += f": quote it{example}"
        return message
    msg = str(error["msg"]).removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]
