"""PlatformPrivileges: what a platform requires before Istio's pods may start (OpenShift's SCC grants)."""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.rbac.v1 import RoleBinding

from mesh.platform import SccGrant


class PlatformPrivileges(pulumi.ComponentResource):
    """RoleBindings to OpenShift's SCC ClusterRoles. Plain RBAC: they need no `security.openshift.io` API,
    so they apply (and are tested) on any cluster; only OpenShift's admission reads them."""

    def __init__(self, name: str, *, grants: list[SccGrant], depends_on: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("istio-mesh:index:PlatformPrivileges", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=depends_on)
        self.bindings = [
            RoleBinding(f"{g.namespace}-{g.name}", **g.role_binding(), opts=child) for g in grants
        ]
        self.register_outputs({})
