"""Simulated previews: run the real program under Pulumi mocks, record every registration with its
options, and diff two recordings the way `pulumi preview` would (adds, updates, deletes by URN).

This sees what the program asks for, not what the Kubernetes provider renders from a chart; the
end-to-end tests cover that against a real engine and API server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi.runtime.settings
from pulumi.runtime.mocks import MockMonitor, MockResourceArgs, Mocks

from mesh.program import deploy, read_config, spec_from_config
from mesh.spec import PROJECT


@dataclass(frozen=True)
class Registration:
    """One RegisterResource request, reduced to what a preview diff and a reviewer care about."""

    type: str
    name: str
    parent: str
    inputs: Mapping[str, Any]
    dependencies: frozenset[str]
    ignore_changes: tuple[str, ...]
    retain_on_delete: bool
    custom: bool

    @property
    def key(self) -> str:
        """A URN stand-in: resources are identified by type, name and parent."""
        return f"{self.parent}/{self.type}::{self.name}"


@dataclass
class Diff:
    added: set[str] = field(default_factory=set)
    updated: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)

    def inverse(self) -> Diff:
        return Diff(added=set(self.deleted), updated=set(self.updated), deleted=set(self.added))


def _short(urn: str) -> str:
    """`urn:pulumi:stack::proj::a$b$type::name` -> `type::name` (the last type and the name)."""
    if not urn:
        return ""
    qualified, name = urn.split("::")[-2:]
    return f"{qualified.split('$')[-1]}::{name}"


class _RecordingMonitor(MockMonitor):
    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.requests: list[Any] = []

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        self.requests.append(request)
        return super().RegisterResource(request)


class _MeshMocks(Mocks):
    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ == "kubernetes:helm.sh/v4:Chart":
            state["resources"] = []
        return (f"{args.name}-id" if args.custom else None), state

    def call(self, args: Any) -> tuple[dict[str, Any], None]:
        return {}, None


@contextmanager
def mocked(config: Mapping[str, Any], preview: bool) -> Iterator[_RecordingMonitor]:
    """Pulumi mocks with `config` set, recording every RegisterResource; nothing left behind on exit."""
    # The SDK runs on the thread's current loop; another test's asyncio.run() may have cleared it.
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_all_config({
        f"{PROJECT}:{key}": value if isinstance(value, str) else json.dumps(value) for key, value in config.items()
    })
    monitor = _RecordingMonitor(_MeshMocks())
    pulumi.runtime.set_mocks(_MeshMocks(), project=PROJECT, stack="test", preview=preview, monitor=monitor)
    try:
        yield monitor
    finally:
        # Leave no mock engine behind: later tests (and pulumi.log) see a process without Pulumi.
        pulumi.runtime.settings.reset_options()


def _decode(value: Any) -> Any:
    """Protobuf structs to plain data, with numbers compared as numbers."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(value) if value is not None else {}


def simulate(config: Mapping[str, Any], preview: bool = True) -> dict[str, Registration]:
    """Run the program once with `config` (key -> value, without the project prefix)."""
    with mocked(config, preview) as monitor:

        @pulumi.runtime.test
        def run() -> None:
            deploy(spec_from_config(read_config(pulumi.Config())))

        run()
    records: dict[str, Registration] = {}
    for req in monitor.requests:
        if req.type == "pulumi:pulumi:Stack":
            continue
        reg = Registration(
            type=req.type,
            name=req.name,
            parent=_short(req.parent),
            inputs=_decode(req.object),
            dependencies=frozenset(_short(d) for d in req.dependencies),
            ignore_changes=tuple(req.ignoreChanges),
            retain_on_delete=bool(req.retainOnDelete),
            custom=req.custom,
        )
        records[reg.key] = reg
    return records


def diff(before: Mapping[str, Registration], after: Mapping[str, Registration]) -> Diff:
    """What a preview from `before` to `after` would show (components never show as updated)."""
    both = before.keys() & after.keys()
    return Diff(
        added=set(after.keys() - before.keys()),
        deleted=set(before.keys() - after.keys()),
        updated={k for k in both if after[k].inputs != before[k].inputs and (after[k].custom or _remote(after[k]))},
    )


def _remote(reg: Registration) -> bool:
    """Charts are remote components: a change of their inputs re-renders (updates) their objects."""
    return reg.type == "kubernetes:helm.sh/v4:Chart"
