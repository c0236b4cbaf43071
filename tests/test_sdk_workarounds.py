"""The Pulumi SDK's leaked pickle patch (mesh/providers/sdk_workaround.py): still there upstream, undone here."""

from __future__ import annotations

import base64
import importlib
import json
import pickle
import pkgutil
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import dill
import pulumi
import pulumi.dynamic
import pulumi.dynamic.dynamic
import pytest
from google.protobuf.json_format import MessageToDict
from pulumi.dynamic import Config, ConfigureRequest, CreateResult, ResourceProvider

from harness.simulation import mocked
from mesh import providers
from mesh.kube import KUBECONFIG_KEY
from mesh.providers import KubeProvider
from mesh.providers.drain_guard import DrainGuard
from mesh.providers.rollout import MeshRollout, RolloutSettings, RolloutTarget
from mesh.providers.sdk_workaround import PATCHED_METHODS, pickled_as_class_alone
from mesh.providers.version_gate import VersionGate

ROOT = Path(__file__).resolve().parent.parent


class NoopProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_="noop", outs=props)


class Noop(pulumi.dynamic.Resource, module="test", name="Noop"):
    """A plain SDK dynamic resource: the workaround must not depend on a base class of ours."""

    def __init__(self, name: str) -> None:
        super().__init__(NoopProvider(), name, {})


def _is_stdlib(method: Callable[..., Any]) -> bool:
    return method.__module__ == "pickle" and method.__qualname__ == f"_Pickler.{method.__name__}"


def _captured(function: Callable[..., Any]) -> list[Any]:
    return [cell.cell_contents for cell in function.__closure__ or ()]


def test_upstream_sdk_still_nests_its_pickle_patch() -> None:
    """Fails once the SDK is fixed: then delete mesh/providers/sdk_workaround.py and its install call."""
    unwrapped = pulumi.dynamic.dynamic.serialize_provider.__wrapped__
    found = {name: vars(pickle._Pickler)[name] for name in PATCHED_METHODS}
    try:
        unwrapped(NoopProvider())
        first = pickle._Pickler._batch_setitems
        unwrapped(NoopProvider())
        second = pickle._Pickler._batch_setitems
    finally:
        for name, method in found.items():
            setattr(pickle._Pickler, name, method)
    assert not _is_stdlib(first) and first in _captured(second), (
        f"pulumi {version('pulumi')} no longer leaves a sorting wrapper on pickle._Pickler._batch_setitems "
        "per dynamic resource: the workaround in mesh/providers/sdk_workaround.py can go"
    )


def test_many_dynamic_resources_register_and_leave_the_pickler_as_the_stdlib_has_it() -> None:
    """Unpatched, the SDK hits RecursionError near 950 dynamic resources (the nesting depth)."""
    with mocked({}, preview=True):

        @pulumi.runtime.test
        def register() -> None:
            for i in range(1200):
                Noop(f"noop-{i}")

        register()
    assert all(_is_stdlib(getattr(pickle._Pickler, name)) for name in PATCHED_METHODS)


def test_serialized_providers_are_identical_across_registrations_and_to_a_fresh_process() -> None:
    """The state stores the pickled provider: any byte of difference would show every resource as changed."""
    with mocked({}, preview=True) as monitor:

        @pulumi.runtime.test
        def register() -> None:
            for i in range(20):
                VersionGate(f"gate-{i}", versions={"r": "1.30.0"})
                DrainGuard(f"guard-{i}", revision="r", drain_timeout_seconds=0)
                target = RolloutTarget(f"ns-{i}", "r", RolloutSettings("docker.io/istio/proxyv2:1.30.0", "rolling"))
                MeshRollout(f"rollout-{i}", targets=[target], concurrency=4, per_namespace=None, timeout_seconds=600)

        register()
    serialized: dict[str, set[str]] = {}
    for request in monitor.requests:
        if "__provider" in request.object.fields:
            provider = MessageToDict(request.object)["__provider"]["value"]
            serialized.setdefault(request.type.rsplit(":", 1)[-1], set()).add(provider)
    # What the SDK alone stores: its first serialization in a fresh interpreter, before any nesting.
    fresh = subprocess.run(
        [sys.executable, "-c", (
            "import json\n"
            "from pulumi.dynamic.dynamic import serialize_provider\n"
            "from mesh.providers.drain_guard import DrainGuardProvider\n"
            "from mesh.providers.rollout import MeshRolloutProvider\n"
            "from mesh.providers.version_gate import VersionGateProvider\n"
            "providers = {'VersionGate': VersionGateProvider, 'DrainGuard': DrainGuardProvider,"
            " 'MeshRollout': MeshRolloutProvider}\n"
            "print(json.dumps({name: serialize_provider(cls()) for name, cls in providers.items()}))"
        )],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert serialized == {name: {value} for name, value in json.loads(fresh.stdout).items()}


class CountingProvider(ResourceProvider):
    """A provider with instance state: its pickle differs per instance, so it is never reused."""

    def __init__(self, count: int) -> None:
        self.count = count


def _sdk_serialize(provider: object) -> str:
    """What the SDK alone stores for `provider`, leaving pickle as it found it."""
    found = {name: vars(pickle._Pickler)[name] for name in PATCHED_METHODS}
    try:
        return pulumi.dynamic.dynamic.serialize_provider.__wrapped__(provider)
    finally:
        for name, method in found.items():
            setattr(pickle._Pickler, name, method)


def _mesh_provider_classes() -> list[type[ResourceProvider]]:
    """Every provider class defined in mesh/providers/."""
    modules = [importlib.import_module(f"mesh.providers.{m.name}") for m in pkgutil.iter_modules(providers.__path__)]
    return sorted({cls for module in modules for cls in vars(module).values() if isinstance(cls, type)
                   and issubclass(cls, ResourceProvider) and cls.__module__ == module.__name__},
                  key=lambda cls: cls.__qualname__)


def test_every_provider_of_ours_pickles_as_its_class_alone_whatever_its_instance_holds() -> None:
    """Fails if the SDK's pickle of one of our providers starts to depend on the instance: then it may
    not be reused per class (see mesh/providers/sdk_workaround.py)."""
    classes = _mesh_provider_classes()
    assert {"MeshRolloutProvider", "NamespaceLabelsProvider", "VersionGateProvider"} <= {
        c.__name__ for c in classes}
    for cls in classes:
        used = cls()
        if isinstance(used, KubeProvider):  # what configure leaves in the provider process
            used.configure(ConfigureRequest(Config({KUBECONFIG_KEY: "/secret/kubeconfig"}, "istio-mesh")))
        assert pickled_as_class_alone(used) is cls
        assert _sdk_serialize(cls()) == _sdk_serialize(used) == pulumi.dynamic.dynamic.serialize_provider(used)
        assert type(dill.loads(base64.b64decode(_sdk_serialize(used)))) is cls


def test_a_stateless_class_is_pickled_once_and_anything_else_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    serialize = pulumi.dynamic.dynamic.serialize_provider
    reused = serialize(NoopProvider())

    class Local(ResourceProvider):  # not importable by name: dill pickles the class itself, by value
        label = "first"

    first_local = serialize(Local())
    Local.label = "second"
    assert serialize(Local()) != first_local
    assert serialize(CountingProvider(1)) != serialize(CountingProvider(2))

    def no_pickling(*_args: Any, **_kwargs: Any) -> bytes:
        raise AssertionError("pickled again")

    monkeypatch.setattr(dill, "dumps", no_pickling)
    assert serialize(NoopProvider()) == reused
    with pytest.raises(AssertionError, match="pickled again"):
        serialize(CountingProvider(3))


def test_the_sdk_still_turns_every_number_of_a_resources_properties_into_a_float() -> None:
    """Properties travel as protobuf Structs, whose numbers are doubles: a dynamic resource's outputs come back
    from the state with 443 as 443.0. mesh.revisionless_injector.whole_numbers undoes it for objects kept in the
    state and sent back to the API server; this fails once the SDK keeps integers, and the workaround can go."""
    from pulumi.runtime import rpc

    async def round_trip() -> Any:
        return rpc.deserialize_properties(await rpc.serialize_properties({"port": 443, "nested": [{"n": 10}]}, {}))

    import asyncio

    back = asyncio.run(round_trip())
    assert back == {"port": 443.0, "nested": [{"n": 10.0}]}
    assert isinstance(back["port"], float) and isinstance(back["nested"][0]["n"], float)
