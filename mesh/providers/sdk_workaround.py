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

The same wrapper also pickles each stateless provider class once per process: the SDK pickles the
provider (dill, `recurse=True`) for every dynamic resource although, for a provider with no instance
state whose class is importable by name (so pickled by reference), the bytes depend on the class
alone. Every provider of this package is such a class (`KubeProvider.__getstate__` returns nothing).
That saves the pickling (about 0.4 ms) per dynamic resource; any other provider is pickled each time.
"""

from __future__ import annotations

import functools
import importlib
import pickle
import sys
from collections.abc import Callable

PATCHED_METHODS = ("_batch_setitems", "save_dict")
"""What the SDK's `serialize_provider` replaces on `pickle._Pickler` and leaves replaced."""

_SDK = importlib.import_module("pulumi.dynamic.dynamic")


_BY_CLASS: dict[type, str] = {}
"""Serialized stateless providers, by class (deterministic: the SDK sorts what it pickles)."""


def pickled_as_class_alone(provider: object) -> type | None:
    """The provider's class when its pickle is the class by reference and nothing else: no instance
    state, the default reduction, a class importable by its name. None otherwise."""
    cls = type(provider)
    if cls.__module__ == "__main__" or getattr(sys.modules.get(cls.__module__), cls.__qualname__, None) is not cls:
        return None
    if cls.__reduce_ex__ is not object.__reduce_ex__ or cls.__reduce__ is not object.__reduce__:
        return None
    return cls if provider.__getstate__() in (None, {}) else None


def _wrapped(serialize: Callable[[object], str]) -> Callable[[object], str]:
    """The SDK's serializer, leaving pickle as it found it, and pickling a stateless class only once."""

    @functools.wraps(serialize)
    def serialize_provider(provider: object) -> str:
        cls = pickled_as_class_alone(provider)
        if cls in _BY_CLASS:
            return _BY_CLASS[cls]
        found = {name: vars(pickle._Pickler)[name] for name in PATCHED_METHODS}
        try:
            serialized = serialize(provider)
        finally:
            for name, method in found.items():
                setattr(pickle._Pickler, name, method)
        if cls is not None:
            _BY_CLASS[cls] = serialized
        return serialized

    return serialize_provider


def install() -> None:
    """Wrap the SDK's `serialize_provider`, once however often this is called."""
    if not hasattr(_SDK.serialize_provider, "__wrapped__"):
        _SDK.serialize_provider = _wrapped(_SDK.serialize_provider)
