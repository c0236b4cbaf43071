"""The one place that builds a Kubernetes API client for the dynamic providers.

The providers must reach the same cluster as the Pulumi Kubernetes provider, so they read the same
settings, at run time, in the provider process: stack config `kubernetes:kubeconfig` (a path or
the file's contents) and `kubernetes:context`, else the `KUBECONFIG` environment variable, else
~/.kube/config, else the in-cluster service account. Nothing here is ever stored in a pickled
provider: the settings come from `ResourceProvider.configure`, which only runs after the provider
was unpickled in the provider process, and `KubeSettings` hides its contents from repr.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from kubernetes import client, config

KUBECONFIG_KEY = "kubernetes:kubeconfig"
CONTEXT_KEY = "kubernetes:context"
DEFAULT_KUBECONFIG = "~/.kube/config"
PAGE_SIZE = 500


@dataclass(frozen=True)
class KubeSettings:
    """Where the cluster is: kubeconfig path(s) or contents, and the context to use."""

    kubeconfig: str | None = field(default=None, repr=False)
    context: str | None = None

    @property
    def inline(self) -> bool:
        """The Kubernetes provider accepts the file's contents as well as a path; so do we."""
        text = (self.kubeconfig or "").lstrip()
        return "\n" in text or text.startswith("{") or text.startswith("apiVersion")


def settings_from(get: Callable[[str], Any], environ: Mapping[str, str] | None = None) -> KubeSettings:
    """Settings from a config getter (e.g. `ConfigureRequest.config.get`) and the environment."""
    env = os.environ if environ is None else environ
    kubeconfig = get(KUBECONFIG_KEY) or env.get("KUBECONFIG") or None
    return KubeSettings(kubeconfig=kubeconfig, context=get(CONTEXT_KEY) or None)


def api_client(settings: KubeSettings) -> client.ApiClient:
    """A client for the cluster the settings point at; credentials live only in this object."""
    configuration = client.Configuration()
    if settings.kubeconfig and settings.inline:
        config.load_kube_config_from_dict(
            yaml.safe_load(settings.kubeconfig),
            context=settings.context,
            client_configuration=configuration,
            persist_config=False,
        )
    elif settings.kubeconfig or os.path.exists(os.path.expanduser(DEFAULT_KUBECONFIG)):
        config.load_kube_config(
            config_file=settings.kubeconfig or DEFAULT_KUBECONFIG,
            context=settings.context,
            client_configuration=configuration,
            persist_config=False,
        )
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as e:
            raise config.ConfigException(
                f"no cluster to talk to: set stack config {KUBECONFIG_KEY} (path or contents) or KUBECONFIG, "
                f"as for the Kubernetes provider ({e})"
            ) from e
    return client.ApiClient(configuration)


def list_objects(list_call: Callable[..., Any], **kwargs: Any) -> Iterator[dict[str, Any]]:
    """All items of a list call as plain dicts, page by page.

    Raw JSON instead of the client's model classes: the planning functions read dicts, and a
    status poll over hundreds of pods stays cheap.
    """
    token: str | None = None
    while True:
        response = list_call(limit=PAGE_SIZE, _continue=token, _preload_content=False, **kwargs)
        page = json.loads(response.data)
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return
