"""A Kubernetes label selector's verdict on a set of labels (pure): the one evaluator the webhook overlap
check and the injector-policy prediction share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """`metav1.LabelSelectorAsSelector(s).Matches(labels)`: an absent or empty selector selects everything."""
    selector = selector or {}
    if any(labels.get(k) != str(v) for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def is_valid(selector: Any) -> bool:
    """Whether the API server would accept the selector: known operators, values exactly where they belong."""
    if not isinstance(selector, Mapping):
        return False
    for e in selector.get("matchExpressions") or []:
        if not isinstance(e, Mapping) or e.get("operator") not in OPERATORS:
            return False
        if e["operator"] in ("In", "NotIn") and not e.get("values"):
            return False
    return True
