"""Dynamic providers of the mesh, and what the cluster-facing ones share.

A dynamic provider object is pickled (dill) into the state and unpickled in the provider process,
which imports this package by module path (`mesh.providers.<module>`): the program directory must
be that process's working directory, as it is when the Pulumi CLI runs the program. The classes
here hold no state when pickled; cluster settings arrive through `configure`, in the provider
process only, and `__getstate__` keeps them out of any pickle taken later.

Importing this package works around an SDK bug that every dynamic resource would otherwise hit (one
more nested pickle patch per resource, RecursionError near 950): see `sdk_workaround`.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import ConfigureRequest, ResourceProvider
from pulumi.runtime.rpc import UNKNOWN

from mesh.kube import KubeSettings, settings_from
from mesh.providers import sdk_workaround

sdk_workaround.install()


def is_unknown(value: Any) -> bool:
    """During preview, inputs computed from other resources arrive as this sentinel."""
    return value == UNKNOWN


def progress(message: str) -> None:
    """Progress for the Pulumi CLI. The provider process has no engine connection, so
    `pulumi.log` writes to stderr, which the engine relays as the run goes."""
    pulumi.log.info(message)


class KubeProvider(ResourceProvider):
    """Base of the providers that talk to the cluster with the Kubernetes provider's settings."""

    _settings: KubeSettings | None = None

    def configure(self, req: ConfigureRequest) -> None:
        self._settings = settings_from(req.config.get)

    def kube_settings(self) -> KubeSettings:
        """The configured settings; without `configure` (called in-process), the environment's."""
        return self._settings or settings_from(lambda _key: None)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle no instance state at all: nothing read at run time may reach the state file."""
        return {}
