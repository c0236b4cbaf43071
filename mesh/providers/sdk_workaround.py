"""Workaround for a bug in the Pulumi Python SDK (3.272): every dynamic resource leaks a pickle patch.

To make the pickled provider deterministic, the SDK's `pulumi.dynamic.dynamic.serialize_provider` (run
by every `pulumi.dynamic.Resource` constructor) replaces `pickle._Pickler._batch_setitems` with a
closure that sorts the items and then calls *the method it found*, and replaces
`pickle._Pickler.save_dict`; it restores only the name `pickle.Pickler`, never these two methods. So
the N-th dynamic resource of a program pickles every dict through N nested sorting closures:
registration time grows quadratically, and past roughly 950 dynamic resources (a stack of about 500
bound namespaces) it raises RecursionError, under mocks and under the real engine alike.

`install` wraps the SDK's `serialize_provider` so it leaves both methods as it found them. Each
provider is then pickled through exactly one sorting closure, byte for byte what the SDK's first
registration in a process produces (so the state's copy stays stable and previews show no diff).
The SDK's constructor looks the function up as a module global on every call, so wrapping it there
covers every dynamic resource, whichever base class it derives from. `mesh.providers` installs it on
import. `tests/test_sdk_workarounds.py` fails once the SDK stops leaking the patch: then delete this
module and its call.
"""

from __future__ import annotations

import functools
import importlib
import pickle
from collections.abc import Callable

PATCHED_METHODS = ("_batch_setitems", "save_dict")
"""What the SDK's `serialize_provider` replaces on `pickle._Pickler` and leaves replaced."""

_SDK = importlib.import_module("pulumi.dynamic.dynamic")


def _leaving_pickle_as_found(serialize: Callable[[object], str]) -> Callable[[object], str]:
    @functools.wraps(serialize)
    def serialize_provider(provider: object) -> str:
        found = {name: vars(pickle._Pickler)[name] for name in PATCHED_METHODS}
        try:
            return serialize(provider)
        finally:
            for name, method in found.items():
                setattr(pickle._Pickler, name, method)

    return serialize_provider


def install() -> None:
    """Wrap the SDK's `serialize_provider`, once however often this is called."""
    if not hasattr(_SDK.serialize_provider, "__wrapped__"):
        _SDK.serialize_provider = _leaving_pickle_as_found(_SDK.serialize_provider)
