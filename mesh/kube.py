"""The one place that builds a Kubernetes API client for the dynamic providers, and calls the API by path.

The providers must reach the same cluster as the Pulumi Kubernetes provider, so they read the same
settings, at run time, in the provider process: stack config `kubernetes:kubeconfig` (a path or
the file's contents) and `kubernetes:context`, else the `KUBECONFIG` environment variable, else
~/.kube/config, else the in-cluster service account. Nothing here is ever stored in a pickled
provider: the settings come from `ResourceProvider.configure`, which only runs after the provider
was unpickled in the provider process, and `KubeSettings` hides its contents from repr.

Calls go by path (`request`, `collection`, `read`, `patch`, ...) through the client's `ApiClient`, which keeps
authentication, TLS and connection reuse, and not through its generated API classes: the program reads and writes
plain dicts anyway, and importing `CoreV1Api`, `AppsV1Api` and the others costs 0.7 s of CPU in every process
that would use them (`mesh review` and `mesh status` are run by hand, where that was a third of their time).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

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
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
RESOURCES = {
    "Pod": ("v1", "pods"), "Namespace": ("v1", "namespaces"), "Service": ("v1", "services"),
    "ConfigMap": ("v1", "configmaps"), "Deployment": ("apps/v1", "deployments"),
    "StatefulSet": ("apps/v1", "statefulsets"), "DaemonSet": ("apps/v1", "daemonsets"),
    "ReplicaSet": ("apps/v1", "replicasets"), "CronJob": ("batch/v1", "cronjobs"),
    "MutatingWebhookConfiguration": ("admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations"),
    "ProxyConfig": ("networking.istio.io/v1beta1", "proxyconfigs"),
}
"""Kind -> (apiVersion, plural): every kind the program reads or writes."""


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
            response = list_call(limit=PAGE_SIZE, _continue=token, **kwargs)
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
                response = list_call(limit=PAGE_SIZE, _continue=token, **kwargs)
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


def path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
    """The API path of a kind's collection (in `namespace`, or across all of them) or of one object."""
    version, plural = RESOURCES[kind]
    root = "/api/v1" if version == "v1" else f"/apis/{version}"
    scope = f"/namespaces/{quote(namespace, safe='')}" if namespace else ""
    return f"{root}{scope}/{plural}" + (f"/{quote(name, safe='')}" if name else "")


def query_of(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Query parameters as the API server spells them, from the client's keyword names (`_continue`,
    `label_selector`, `resource_version`, ...); None is left out, booleans are `true`/`false`."""
    def camel(key: str) -> str:
        head, *rest = key.lstrip("_").split("_")
        return head + "".join(word.capitalize() for word in rest)
    return [(camel(k), str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items() if v is not None]


def request(api: client.ApiClient, method: str, url_path: str, query: Mapping[str, Any] | None = None,
            body: Any = None, content_type: str = "application/json", timeout: Any = None) -> Any:
    """One call to the API server; the raw response (read `.data`, or `.stream()` for a watch), or the
    client's ApiException for any status outside 2xx, as the generated API classes raise it."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    serialized = api.param_serialize(method, url_path, query_params=query_of(query or {}), header_params=headers,
                                     body=body, auth_settings=["BearerToken"])
    response = api.call_api(*serialized, _request_timeout=timeout)
    if not 200 <= response.status <= 299:
        response.read()
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    return response.response


def read(api: client.ApiClient, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    """One object as a dict."""
    return json.loads(request(api, "GET", path(kind, namespace, name)).data)


def find(api: client.ApiClient, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    """One object as a dict, None when it does not exist."""
    try:
        return read(api, kind, name, namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def patch(api: client.ApiClient, kind: str, name: str, body: Mapping[str, Any] | list[dict[str, Any]],
          namespace: str | None = None, content_type: str | None = None, **params: Any) -> dict[str, Any]:
    """Patch one object: a list of operations is a JSON patch, an object a strategic merge, unless
    `content_type` says otherwise (server-side apply); `params` such as `field_manager`, `force`, `dry_run`.
    The object as the API server left it."""
    kind_of_patch = content_type or (JSON_PATCH if isinstance(body, list) else STRATEGIC_MERGE)
    return json.loads(request(api, "PATCH", path(kind, namespace, name), params, body, kind_of_patch).data)


def create(api: client.ApiClient, kind: str, body: Mapping[str, Any], namespace: str | None = None) -> None:
    request(api, "POST", path(kind, namespace), body=body)


def replace(api: client.ApiClient, kind: str, name: str, body: Mapping[str, Any],
            namespace: str | None = None) -> None:
    request(api, "PUT", path(kind, namespace, name), body=body)


def delete(api: client.ApiClient, kind: str, name: str, namespace: str | None = None) -> None:
    request(api, "DELETE", path(kind, namespace, name))


def server_version(api: client.ApiClient, timeout: Any = None) -> str:
    """The API server's version, as `kubectl version` prints it (`v1.34.1`)."""
    return str(json.loads(request(api, "GET", "/version", timeout=timeout).data)["gitVersion"])


def collection(api: client.ApiClient, kind: str) -> Callable[..., Any]:
    """A kind's list call, for `list_objects`, `list_consistent` and watches: called with `namespace` (None: every
    namespace) and the list's parameters by the client's names (`limit`, `_continue`, `watch`, ...)."""
    def list_call(namespace: str | None = None, _request_timeout: Any = None, **params: Any) -> Any:
        return request(api, "GET", path(kind, namespace), params, timeout=_request_timeout)
    return list_call
