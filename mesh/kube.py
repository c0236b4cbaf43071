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
from kubernetes.client.exceptions import ApiException

KUBECONFIG_KEY = "kubernetes:kubeconfig"
CONTEXT_KEY = "kubernetes:context"
DEFAULT_KUBECONFIG = "~/.kube/config"
PAGE_SIZE = 500
"""Items per list request: what a reader holds at once when it folds a list as it comes."""
GONE = 410
CONNECTIONS = 128
"""Connections kept for reuse: a MeshRollout holds one watch per kind it follows in each namespace it moves."""
RELISTS = 5
"""A consistent list restarted this often after its continue token expired is given up."""


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
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, CONNECTIONS)
    return client.ApiClient(configuration)


def list_objects(list_call: Callable[..., Any], **kwargs: Any) -> Iterator[dict[str, Any]]:
    """All items of a list call as plain dicts, page by page (`PAGE_SIZE` at a time, so a reader that folds
    them as they come holds one page, whatever the cluster's size).

    Raw JSON instead of the client's model classes: the planning functions read dicts. A continue token that
    expired between two pages (410 Gone, after etcd's compaction) is answered with a token for the rest of the
    list as of now; the list goes on from there (nothing already returned comes twice, and what changed in
    between is read as it is now), as the API server's message offers. Without one, the 410 is raised.
    """
    token: str | None = None
    while True:
        try:
            response = list_call(limit=PAGE_SIZE, _continue=token, _preload_content=False, **kwargs)
        except ApiException as e:
            token = expired_continue(e) if token else None
            if not token:
                raise
            continue
        page = json.loads(response.data)
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def expired_continue(e: ApiException) -> str | None:
    """The token the API server offers with a 410 for an expired continue token: the rest of the list, now."""
    if e.status != GONE:
        return None
    try:
        body = json.loads(e.body or "{}")
    except ValueError:
        return None
    return (body.get("metadata") or {}).get("continue") or None


def list_consistent(list_call: Callable[..., Any], **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
    """Every item of a list call as of one resourceVersion, and that version (where a watch starts), page by
    page. A page whose continue token expired (410) starts the list over: a watch resumed from the version
    must start from a list that is all of that version."""
    for _attempt in range(RELISTS):
        items: list[dict[str, Any]] = []
        token: str | None = None
        try:
            while True:
                response = list_call(limit=PAGE_SIZE, _continue=token, _preload_content=False, **kwargs)
                page = json.loads(response.data)
                items += page.get("items") or []
                meta = page.get("metadata") or {}
                token = meta.get("continue")
                if not token:
                    return items, str(meta.get("resourceVersion") or "")
        except ApiException as e:
            if e.status != GONE or token is None:
                raise
    raise ApiException(status=GONE, reason=f"list expired {RELISTS} times in a row before its last page")
