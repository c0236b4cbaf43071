"""The MeshRollout's entry keys (pure): a bound namespace is `<namespace>`; a gateway's workload is
`<namespace>/<name>` for a Deployment and `<namespace>/<Kind>/<name>` for another kind (a DaemonSet gateway).

Deployments keep the form entries always had, so stacks deployed before other kinds were honoured see no
change. The format lives here once: the Gateway component writes the entries, the MeshRollout and
`mesh review` read them, so all three mean the workload the chart renders (`values.name`, `values.kind`).
"""

from __future__ import annotations

from mesh.charts import DEPLOYMENT, gateway_kind, gateway_workload
from mesh.spec import GatewaySpec
from mesh.workloads import KINDS, Kind


def workload_entry(namespace: str, kind: str, name: str) -> str:
    """The entry of one workload."""
    return f"{namespace}/{name}" if kind == DEPLOYMENT else f"{namespace}/{kind}/{name}"


def gateway_entry(name: str, gateway: GatewaySpec) -> str:
    """The entry of gateway `name`'s workload, named and kinded as its chart renders it."""
    return workload_entry(gateway.namespace, gateway_kind(gateway), gateway_workload(name, gateway))


def entry_workload(entry: str) -> tuple[str, Kind | None, str | None]:
    """An entry's namespace, and the kind and name of the one workload it is about (None, None: a namespace)."""
    ns, _, part = entry.partition("/")
    if not part:
        return ns, None, None
    kind, _, name = part.rpartition("/")
    for known in KINDS:
        if known == (kind or DEPLOYMENT):
            return ns, known, name
    raise ValueError(f"entry {entry}: {kind} is not one of {', '.join(KINDS)}")
