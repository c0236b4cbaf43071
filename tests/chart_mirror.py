"""The toolchain's chart mirror (`toolchain/build-charts.sh`), for tests that read real chart files: a missing
mirror skips them on a workstation and fails them under CI."""

from __future__ import annotations

from pathlib import Path

from harness.toolchain import cache_dir, skip_or_fail_missing
from mesh.spec import ChartSource

OLD, PATCH, NEW = "1.30.0", "1.30.1", "1.31.0"


def mirror() -> ChartSource:
    """`charts.path` as the dev stack sets it, once every version the tests read is there."""
    for version in (OLD, PATCH, NEW):
        root = cache_dir() / f"istio-{version}" / "charts"
        if not (root / "istiod" / "values.yaml").is_file():
            skip_or_fail_missing(f"no chart mirror at {root} (bash toolchain/build-charts.sh)")
    return ChartSource(path=str(cache_dir() / "istio-{version}" / "charts"))


def root(version: str) -> Path:
    return cache_dir() / f"istio-{version}" / "charts"
