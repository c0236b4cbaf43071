"""The mesh as data: pydantic models for the stack config, and the lookups derived from it.

Everything here is pure: it takes the config values Pulumi hands us and returns models. Shape errors
(wrong types, unknown keys, bad names) are reported by pydantic here; rules across keys (references,
version skew) live in `mesh.validation`. Both report `ConfigError`s that name the full config key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import semver
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

PROJECT = "istio-mesh"
"""The Pulumi project name; config keys are `istio-mesh:<key>`."""

ISTIO_NAMESPACE = "istio-system"
DEFAULT_TAG = "default"
"""The tag that also serves the legacy `istio-injection=enabled` label and decides `defaultRevision`."""

DEFAULT_HUB = "docker.io/istio"
DEFAULT_CHART_REPOSITORY = "https://istio-release.storage.googleapis.com/charts"

Strategy = Literal["rolling", "natural", "none"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


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


def parse_version(version: str) -> semver.Version:
    """Istio versions are plain semver (`1.30.2`, `1.31.0-beta.1`)."""
    return semver.Version.parse(version)


class _Model(BaseModel):
    """Config models accept camelCase keys (as written in stack YAML) and reject unknown keys."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class ChartSource(_Model):
    """Where the `base`, `istiod` and `gateway` charts come from: exactly one of the three."""

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


class Revision(_Model):
    """One istiod control plane (Sail's IstioRevision)."""

    version: str
    values: dict[str, Any] = Field(default_factory=dict)
    """Passed through to the istiod chart, merged over what the program sets."""

    @field_validator("version")
    @classmethod
    def _semver(cls, v: str) -> str:
        try:
            parse_version(v)
        except ValueError:
            raise ValueError(f'"{v}" is not a semantic version such as "1.30.2"') from None
        return v


class NamespaceBinding(_Model):
    """Which tag or revision a namespace's new pods get, and how its running pods move."""

    revision: str
    """A tag or a revision name."""
    strategy: Strategy | None = None
    """`rolling` restarts workloads now, `natural` waits for their next deploy, `none` only labels."""


class ServicePort(_Model):
    name: str
    port: int = Field(ge=1, le=65535)
    target_port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"


class GatewayService(_Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "LoadBalancer"
    ports: list[ServicePort] | None = None
    """None keeps the chart's default ports (15021, 80, 443)."""


class Gateway(_Model):
    """A gateway Deployment+Service from the `gateway` chart, pinned to a tag or revision."""

    namespace: str
    revision: str
    """A tag or a revision name; pinning keeps a new revision from taking over the gateway by surprise."""
    replicas: int = Field(default=1, ge=1)
    service: GatewayService = Field(default_factory=GatewayService)
    strategy: Strategy | None = None
    values: dict[str, Any] = Field(default_factory=dict)


class Rollout(_Model):
    """Defaults for moving running pods after a binding changes."""

    strategy: Strategy = "rolling"
    concurrency: int = Field(default=4, ge=1)
    timeout_seconds: int = Field(default=600, ge=1)
    """Per workload: how long a restarted workload may take to become ready."""
    drain_timeout_seconds: int = Field(default=0, ge=0)
    """How long removing a revision waits for its pods to go before refusing."""


class MeshSpec(_Model):
    """The whole stack config (Sail's Istio resource, plus bindings and gateways)."""

    charts: ChartSource = Field(default_factory=ChartSource)
    hub: str = DEFAULT_HUB
    """Image registry for istiod and proxies (`global.hub`); point it at your mirror when air-gapped."""
    revisions: dict[str, Revision]
    tags: dict[str, str] = Field(default_factory=dict)
    namespaces: dict[str, NamespaceBinding] = Field(default_factory=dict)
    gateways: dict[str, Gateway] = Field(default_factory=dict)
    rollout: Rollout = Field(default_factory=Rollout)

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
    def newest_version(self) -> str:
        """Base (CRDs, cluster roles) follows the newest installed revision."""
        return str(max(parse_version(r.version) for r in self.revisions.values()))

    def strategy_of(self, binding: NamespaceBinding | Gateway) -> Strategy:
        return binding.strategy or self.rollout.strategy


def _key(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as a `--path` style config key (`revisions.canary.version`)."""
    parts = [str(p) for p in loc if p not in ("function-after[_one_source()]",)]
    return ".".join(parts)


def load_spec(config: Mapping[str, Any]) -> MeshSpec:
    """Build the spec from raw config values (key -> decoded YAML), or raise SpecError naming each bad key."""
    data = {k: v for k, v in config.items() if v is not None}
    if "revisions" not in data:
        raise SpecError([ConfigError("revisions", "is not set: declare at least one revision, e.g. "
                                     "`pulumi config set --path 'revisions.1-30-2.version' 1.30.2`")])
    try:
        return MeshSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([ConfigError(_key(e["loc"]), _message(e)) for e in exc.errors()]) from None


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "is not a known setting: check the spelling against Pulumi.yaml's config block"
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        return f"{error['msg'].lower()} (got {error['input']!r})"
    msg = str(error["msg"]).removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]
