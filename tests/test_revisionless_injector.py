"""Taking over from a revisionless install: its injector deactivated while the default tag exists, restorable."""

from __future__ import annotations

import json

from mesh.drain import pods_using
from mesh.istio_vocabulary import REVISIONLESS
from mesh.revisionless_injector import (
    ORIGINAL_SELECTORS,
    deactivated,
    is_deactivated,
    restored,
    revisionless_pods,
)
from mesh.workloads import pod_from_object

LEGACY_NS = {"matchExpressions": [{"key": "istio-injection", "operator": "In", "values": ["enabled"]}]}
NOT_OPTED_OUT = {"matchExpressions": [{"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]}


def old_injector() -> dict:
    return {
        "metadata": {"name": "istio-sidecar-injector", "resourceVersion": "42", "labels": {"istio.io/rev": "default"}},
        "webhooks": [
            {"name": "namespace.sidecar-injector.istio.io", "namespaceSelector": LEGACY_NS,
             "objectSelector": NOT_OPTED_OUT, "clientConfig": {"service": {"name": "istiod"}}},
            {"name": "object.sidecar-injector.istio.io", "objectSelector": NOT_OPTED_OUT,
             "clientConfig": {"service": {"name": "istiod"}}},
        ],
    }


def test_deactivation_selects_nothing_and_keeps_the_originals_on_the_object() -> None:
    hook = old_injector()
    off = deactivated(hook)
    assert is_deactivated(off) and not is_deactivated(hook)
    assert hook == old_injector(), "the input is not modified"
    for w in off["webhooks"]:
        assert w["namespaceSelector"]["matchExpressions"][0]["operator"] == "In"
        assert w["namespaceSelector"] == w["objectSelector"]
    assert off["metadata"]["resourceVersion"] == "42", "a replace must carry what was read"
    kept = json.loads(off["metadata"]["annotations"][ORIGINAL_SELECTORS])
    assert kept["namespace.sidecar-injector.istio.io"]["namespaceSelector"] == LEGACY_NS


def test_restoring_gives_back_exactly_what_the_install_had() -> None:
    back = restored(deactivated(old_injector()))
    assert back is not None
    assert back["webhooks"] == old_injector()["webhooks"]
    assert ORIGINAL_SELECTORS not in back["metadata"]["annotations"]
    assert restored(old_injector()) is None, "never deactivated: nothing to restore"


def test_deactivating_twice_keeps_the_first_originals() -> None:
    off = deactivated(old_injector())
    again = deactivated(off)
    assert again["metadata"]["annotations"][ORIGINAL_SELECTORS] == off["metadata"]["annotations"][ORIGINAL_SELECTORS]
    assert restored(again)["webhooks"] == old_injector()["webhooks"]


def test_an_entry_added_by_an_upgrade_of_the_old_install_is_left_as_it_is_on_restore() -> None:
    off = deactivated(old_injector())
    off["webhooks"].append({"name": "auto.sidecar-injector.istio.io", "objectSelector": NOT_OPTED_OUT})
    assert not is_deactivated(off), "re-activated by an upgrade: drift the next up fixes"
    back = restored(off)
    assert back["webhooks"][2] == {"name": "auto.sidecar-injector.istio.io", "objectSelector": NOT_OPTED_OUT}


def test_pods_of_the_revisionless_istiod_are_counted_with_the_drain_guards_rule() -> None:
    pods = [
        {"metadata": {"namespace": "shop", "name": f"p{i}", "annotations": {"istio.io/rev": REVISIONLESS}}}
        for i in range(3)
    ] + [{"metadata": {"namespace": "shop", "name": "new", "annotations": {"istio.io/rev": "1-30-0"}}}]
    users = pods_using([pod_from_object(p) for p in pods], REVISIONLESS)
    assert users == {"shop": ["p0", "p1", "p2"]}
    assert revisionless_pods({"shop": 3}) == (
        "3 pod(s) still run the revisionless istiod, in shop (3): bind or restart them before uninstalling it")
    assert revisionless_pods({}).startswith("no pod runs the revisionless istiod")
