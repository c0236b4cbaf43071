"""Istio: the whole mesh of one cluster, built from a validated spec (Sail's `Istio` resource).

The one component that reads the spec: it resolves each object's arguments once (chart references,
values, the revision a tag or binding stands for, the proxy image that revision injects, the rollout
settings) and hands every other component only those, so each reads on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import pulumi
from pulumi_kubernetes.core.v1 import Namespace

from mesh.charts import (
    base_values,
    canary_values,
    canary_version,
    chart_ref,
    cni_values,
    gateway_kind,
    gateway_values,
    gateway_version,
    gateway_workload,
    istiod_values,
)
from mesh.components.gateway import CanaryRelease, Gateway
from mesh.components.helm import install_chart
from mesh.components.istio_cni import IstioCNI
from mesh.components.istio_revision import IstioRevision
from mesh.components.istio_revision_tag import IstioRevisionTag
from mesh.components.namespace_bindings import BoundNamespace, NamespaceBindings
from mesh.components.platform_privileges import PlatformPrivileges
from mesh.deployed_charts import fingerprint, gateway_key, revision_key, settled
from mesh.injection import injectors_of
from mesh.istio_vocabulary import ISTIO_NAMESPACE
from mesh.namespace_labels import GatewayPin
from mesh.platform import cni_namespace, needs_network_attachments, network_attachment, scc_grants
from mesh.providers.external_revision import ExternalRevision
from mesh.providers.rollout import MeshRollout, RolloutSettings
from mesh.providers.version_gate import VersionGate
from mesh.proxy_image import proxy_image
from mesh.spec import BindingSpec, GatewaySpec, MeshSpec

Needs = pulumi.Output[list[pulumi.Resource]]
"""What a resource waits for, decided once the last deployed state is read (`Istio.settled`)."""

T = TypeVar("T")

RECORD = "charts"
"""The Istio component's output: each chart's fingerprint as of the last `up` that completed it."""


def recorded_charts(component: pulumi.Resource) -> pulumi.Output[dict[str, Any]]:
    """The component's `charts` output as the last `up` left it. The engine keeps an unchanged component's
    previous outputs until the program registers new ones (at the end, `Istio.__init__`), and its built-in
    `getResource` returns them. The Output carries no resource dependency: a `depends_on` built from it
    waits for nothing but this read."""

    async def read() -> dict[str, Any]:
        urn = await component.urn.future()
        found = await pulumi.runtime.invoke_async("pulumi:pulumi:getResource", {"urn": urn})
        return dict(((found or {}).get("state") or {}).get(RECORD) or {})

    return pulumi.Output.from_input(asyncio.ensure_future(read()))


def released(when: Awaitable[None], value: T) -> pulumi.Output[T]:
    """`value`, once `when` is done: what holds a registration back without a dependency (none is recorded)."""

    async def wait() -> T:
        await when
        return value

    return pulumi.Output.from_input(asyncio.ensure_future(wait()))


def needs(*parts: Needs | Sequence[pulumi.Resource]) -> Needs:
    """One dependency list from several (each a list, or a decided one), without repeats."""
    return pulumi.Output.all(*parts).apply(lambda lists: list(dict.fromkeys(r for deps in lists for r in deps)))


class Istio(pulumi.ComponentResource):
    """Order: version gate -> base (CRDs, at the newest version) -> platform grants, istio-cni (when the
    profile and `cni` ask for them) -> revisions -> tags -> bindings, gateways -> the data-plane rollout
    (one MeshRollout moving the pods of every binding and gateway, from their `rollout_targets`).
    Deletes run in reverse, so a revision goes only after everything that referred to it has moved.

    A revision whose chart (and what it relies on: istio-cni, the platform grants) is as the last completed
    `up` left it is settled: its tags' webhooks, the bindings and the MeshRollout do not wait for it (the
    engine would only walk its unchanged objects, and istio-base's before them), only for the version gate.
    A new or changed revision is waited for as a whole, as is a changed gateway chart (`mesh.deployed_charts`)."""

    revisions: dict[str, IstioRevision]
    external: dict[str, ExternalRevision]
    tags: dict[str, IstioRevisionTag]
    namespaces: NamespaceBindings
    gateways: dict[str, Gateway]
    cni: IstioCNI | None
    rollout: MeshRollout

    def __init__(self, name: str, spec: MeshSpec, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("istio-mesh:index:Istio", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        gate = VersionGate("versions", versions=spec.installed, external=spec.external, opts=child)
        after_gate = pulumi.ResourceOptions(parent=self, depends_on=[gate])
        # Namespaces the mesh needs to install into; kept on delete: nothing here ever deletes a namespace.
        owned_namespaces = {
            ns: Namespace(
                ns,
                metadata={"name": ns},
                opts=pulumi.ResourceOptions.merge(after_gate, pulumi.ResourceOptions(retain_on_delete=True)),
            )
            for ns in sorted({ISTIO_NAMESPACE, *(g.namespace for g in spec.gateways.values())})
        }
        # Shared by every revision and present on clusters taken over from istioctl or Helm; none when every
        # revision is external (their installer's base stays theirs).
        # The engine checks and diffs registrations one at a time, in the order they arrive: istio-base's objects
        # (every chart comes after it) registered first would queue the move behind their diffs even when the
        # move waits for none of them. So when the labels wait for no chart, the charts register after them (and
        # with the MeshRollout); the order of their steps is unchanged.
        charts_may_register: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        base = install_chart(
            "istio-base",
            chart_ref(spec.charts, "base", spec.newest_version),
            released(charts_may_register, base_values(spec)),
            ISTIO_NAMESPACE,
            pulumi.ResourceOptions(parent=self, depends_on=[gate, owned_namespaces[ISTIO_NAMESPACE]]),
            owned_outright=True,
        ) if spec.installed else gate
        # Whatever a revision's pods rely on exists before any revision injects them.
        before_revisions: list[pulumi.Resource] = [base]
        grants = scc_grants(spec)
        if grants:
            before_revisions.append(PlatformPrivileges(
                "platform", grants=grants, depends_on=[base, *owned_namespaces.values()], opts=child,
            ))
        self.cni = (
            IstioCNI(
                "istio-cni",
                chart=chart_ref(spec.charts, "cni", spec.newest_version),
                values=cni_values(spec),
                namespace=cni_namespace(spec),
                depends_on=[base],
                opts=child,
            )
            if spec.cni.enabled else None
        )
        if self.cni:
            before_revisions.append(self.cni)
        values = {name: istiod_values(spec, name) for name in spec.installed}
        proxies = {name: proxy_image(spec, name) for name in spec.revisions}
        # What each revision's istiod is made from and relies on, and each gateway's charts.
        relied_on = (
            (chart_ref(spec.charts, "cni", spec.newest_version), cni_values(spec), cni_namespace(spec))
            if spec.cni.enabled else None,
            grants,
        )
        fingerprints = {
            revision_key(name): fingerprint(
                chart_ref(spec.charts, "istiod", spec.revisions[name].version), values[name], relied_on
            )
            for name in spec.installed
        } | {
            gateway_key(name): fingerprint(
                chart_ref(spec.charts, "gateway", gateway_version(spec, g)), gateway_values(spec, g), g.namespace,
                (chart_ref(spec.charts, "gateway", canary_version(spec, g)), canary_values(spec, name, g))
                if g.canary else None,
            )
            for name, g in spec.gateways.items()
        }
        self.settled: pulumi.Output[frozenset[str]] = recorded_charts(self).apply(
            lambda recorded: settled(recorded, fingerprints)
        )

        def rollout(binding: BindingSpec | GatewaySpec) -> RolloutSettings:
            return RolloutSettings(
                proxy_image=proxies[spec.resolve(binding.revision)], strategy=spec.strategy_of(binding)
            )

        self.revisions = {
            name: IstioRevision(
                name,
                version=rev.version,
                chart=chart_ref(spec.charts, "istiod", rev.version),
                values=values[name],
                drain_timeout_seconds=spec.rollout.drain_timeout_seconds,
                depends_on=before_revisions,
                opts=child,
            )
            for name, rev in sorted(spec.revisions.items()) if not rev.external
        }
        # Installed by someone else: checked in the cluster at preview, never installed or deleted.
        self.external = {
            name: ExternalRevision(
                f"{name}-external", revision=name, tags=[t for t, r in spec.tags.items() if r == name],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[gate]),
            )
            for name in spec.external
        }
        revisions: dict[str, pulumi.Resource] = {**self.revisions, **self.external}

        def serving(revision: str) -> Needs:
            """What must be done before pods are sent to `revision`: the revision when its chart changes (or
            it is external: checked, never installed), else only the version gate."""
            return self.settled.apply(
                lambda done: [gate] if revision_key(revision) in done else [revisions[revision]]
            )

        self.tags = {
            tag: IstioRevisionTag(
                tag,
                revision=revision,
                version=spec.revisions[revision].version,
                revision_values=spec.revisions[revision].values,
                installed=serving(revision),
                opts=child,
            )
            for tag, revision in sorted(spec.tags.items())
        }

        def installed(target: str) -> pulumi.Resource:
            """What must exist before pods are sent to `target` (a tag's webhook, or a revision), whatever
            changes: gateway charts keep it, so a gateway is deleted before the revision it runs on."""
            return self.tags[target].injecting if target in self.tags else revisions[target]

        def ready(target: str) -> Needs:
            """What must be done before pods are sent to `target` in this `up` (see `serving`)."""
            return needs([self.tags[target].injecting]) if target in self.tags else serving(target)

        self.namespaces = NamespaceBindings(
            "namespaces",
            bindings={
                ns: BoundNamespace(target=b.revision, revision=spec.resolve(b.revision), rollout=rollout(b))
                for ns, b in sorted(spec.namespaces.items())
            },
            created=sorted(owned_namespaces),
            # Their namespaces' own injection labels would beat their pods' label: the preview checks them.
            gateways={
                name: GatewayPin(g.namespace, g.revision, g.canary.revision if g.canary else None)
                for name, g in sorted(spec.gateways.items()) if g.namespace not in spec.namespaces
            },
            # Every target serving, and every namespace the program creates, before any label is set.
            depends_on=needs(
                *(ready(b.revision) for _, b in sorted(spec.namespaces.items())),
                [owned_namespaces[ns] for ns in sorted(spec.namespaces) if ns in owned_namespaces],
            ),
            network_attachments=(
                {ns: network_attachment(ns) for ns in spec.namespaces} if needs_network_attachments(spec) else {}
            ),
            opts=child,
        )

        labelled = {revision_key(r) for r in {spec.resolve(b.revision) for b in spec.namespaces.values()}
                    if r in spec.installed}

        async def release_charts() -> None:
            try:
                if labelled <= (await self.settled.future() or frozenset()):
                    await self.namespaces.labels.urn.future()
            finally:
                charts_may_register.set_result(None)

        self.charts_released = asyncio.ensure_future(release_charts())

        def canary(name: str, g: GatewaySpec) -> CanaryRelease | None:
            """A gateway's second Deployment, on its canary revision, behind the gateway's Service."""
            if g.canary is None:
                return None
            return CanaryRelease(
                chart=chart_ref(spec.charts, "gateway", canary_version(spec, g)),
                values=canary_values(spec, name, g),
                revision=spec.resolve(g.canary.revision),
                rollout=RolloutSettings(
                    proxy_image=proxies[spec.resolve(g.canary.revision)], strategy=spec.strategy_of(g)
                ),
                depends_on=[installed(g.canary.revision), owned_namespaces[g.namespace]],
            )

        self.gateways = {
            name: Gateway(
                name,
                namespace=g.namespace,
                chart=chart_ref(spec.charts, "gateway", gateway_version(spec, g)),
                values=gateway_values(spec, g),
                revision=spec.resolve(g.revision),
                workload=gateway_workload(name, g),
                kind=gateway_kind(g),
                rollout=rollout(g),
                # After the bindings' labels, and after the check of its own namespace's labels.
                depends_on=[installed(g.revision), owned_namespaces[g.namespace], self.namespaces],
                canary=canary(name, g),
                opts=child,
            )
            for name, g in sorted(spec.gateways.items())
        }
        # One budget for every namespace and gateway that moves: after all labels are set, and after each gateway's
        # charts when they change (else after what its pods are sent to).
        movers = [self.namespaces, *self.gateways.values()]

        def gateway_after(name: str, g: GatewaySpec) -> Needs:
            gateway = self.gateways[name]
            targets = [g.revision, *([g.canary.revision] if g.canary else [])]
            keys = {gateway_key(name), *(revision_key(spec.resolve(t)) for t in targets if not
                                         spec.revisions[spec.resolve(t)].external)}
            return pulumi.Output.all(needs(*(ready(t) for t in targets)), self.settled).apply(
                lambda args: args[0] if keys <= args[1] else gateway.rollout_after
            )

        self.rollout = MeshRollout(
            "data-plane-rollout",
            targets=[t for m in movers for t in m.rollout_targets],
            concurrency=spec.rollout.concurrency,
            per_namespace=spec.rollout.per_namespace,
            timeout_seconds=spec.rollout.timeout_seconds,
            injectors=injectors_of({t.revision for m in movers for t in m.rollout_targets} & set(values), values),
            opts=pulumi.ResourceOptions(parent=self, depends_on=needs(
                self.namespaces.rollout_after, *(gateway_after(name, g) for name, g in sorted(spec.gateways.items()))
            )),
        )
        # Recorded once every chart is complete (a revision's guard comes after its chart; a chart's resources
        # after all its objects): an `up` that fails before leaves the previous record.
        complete = [
            *(rev.guard.id for rev in self.revisions.values()),
            *(c.resources for g in self.gateways.values() for c in (g.chart, g.canary_chart) if c is not None),
        ]
        self.register_outputs({RECORD: pulumi.Output.all(*complete).apply(lambda _: fingerprints)})
