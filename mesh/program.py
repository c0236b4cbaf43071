"""The program's edges: read stack config, validate it whole, build the mesh, export what it is."""

from __future__ import annotations

from typing import Any

import pulumi

from mesh import chart_files
from mesh.charts import istiod_values
from mesh.checks.run import chart_versions, preview_refusals
from mesh.components import Istio
from mesh.injection import InjectorPolicy
from mesh.proxy_image import proxy_image
from mesh.spec import ConfigError, MeshSpec, SpecError, load_spec
from mesh.validation import validate_or_raise

OBJECT_KEYS = ("charts", "revisions", "tags", "namespaces", "gateways", "rollout", "cni")
STRING_KEYS = ("hub", "profile")


def read_config(config: pulumi.Config) -> dict[str, Any]:
    """Raw values of the project's keys; structured keys are YAML objects in the stack file."""
    raw: dict[str, Any] = {key: config.get_object(key) for key in OBJECT_KEYS}
    raw.update({key: config.get(key) for key in STRING_KEYS})
    return raw


def spec_from_config(raw: dict[str, Any]) -> MeshSpec:
    """The validated spec, or a RunError listing every problem (shown without a traceback). With charts in a local
    mirror, what their files refuse too (`mesh.checks.run.preview_refusals`: the review's refusals of that kind)."""
    try:
        spec = validate_or_raise(load_spec(raw))
        charts = chart_files.library(spec.charts, chart_versions(spec, []))
        refused = preview_refusals(spec, charts)
        if refused:
            raise SpecError([ConfigError(f.key, f.message) for f in refused])
        return spec
    except SpecError as exc:
        raise pulumi.RunError(str(exc)) from None


def deploy(spec: MeshSpec) -> Istio:
    mesh = Istio("mesh", spec)
    injectors = {name: InjectorPolicy.from_values(istiod_values(spec, name)) for name in mesh.revisions}
    pulumi.export("revisions", {
        name: {"version": rev.version, "service": rev.service, "proxy": proxy_image(spec, name),
               # Only when its values change which pods istiod injects: other stacks keep their outputs.
               **({"injector": injectors[name].props()} if injectors[name] != InjectorPolicy() else {})}
        for name, rev in mesh.revisions.items()
    } | {
        # Installed outside the stack: what the cluster said of it at the last `up` ("" where it says nothing).
        name: {"external": True, "version": ext.version, "proxy": ext.proxy_image}
        for name, ext in mesh.external.items()
    })
    pulumi.export("tags", {tag: t.revision for tag, t in mesh.tags.items()})
    pulumi.export("namespaces", mesh.namespaces.revisions)
    pulumi.export("gateways", {
        name: {"namespace": g.namespace, "revision": g.revision, **({"canary": g.canary} if g.canary else {})}
        for name, g in mesh.gateways.items()
    })
    if spec.profile or spec.cni.enabled:
        # Only when set, so stacks without either keep their outputs (and their review) as they were.
        pulumi.export("platform", {
            **({"profile": spec.profile} if spec.profile else {}),
            **({"cni": spec.newest_version} if spec.cni.enabled else {}),
        })
    return mesh
