"""Reads what the checks need from a local chart mirror (`charts.path`): each chart's values, templates and
compatibility profiles, and Istio's release notes. The parsing is `mesh.checks.chart_facts`' and
`mesh.checks.upgrade_notes`'; this module only finds and reads files, once per process.

Release notes come from `<charts>/releasenotes/notes/*.yaml` when the mirror carries them, else from the
istio.io/istio snapshot named by the mirror's `SOURCE` file (`istio.io/istio@<version>`) in the Go module cache
(`GOMODCACHE`, else `$GOPATH/pkg/mod`, else `~/go/pkg/mod`), as `toolchain/` extracts the charts from it.
Charts from a Helm repository or an OCI registry are not on disk: those checks are skipped, and say so.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from mesh.checks.chart_facts import ChartFacts, parse_chart
from mesh.checks.upgrade_notes import Note, parse_note
from mesh.spec import ChartSource

_SKIPPED_FILES = ("crd-all.gen.yaml",)
"""Files no value is read from (the base chart's CRDs, a few MB)."""


def charts_root(source: ChartSource, version: str) -> Path | None:
    """The mirror directory of `version` (holding `istiod/`, `gateway/`, ...), None when charts are not local."""
    if not source.path:
        return None
    return Path(os.path.expanduser(source.path.format(version=version))).resolve()


@functools.cache
def read_chart(root: Path, chart: str, version: str) -> ChartFacts | None:
    """One chart's facts, None when the mirror has no such chart."""
    directory = root / chart
    if not (directory / "values.yaml").is_file():
        return None
    texts = {}
    for sub in ("templates", "files"):
        for path in sorted((directory / sub).glob("*")):
            if path.is_file() and path.name not in _SKIPPED_FILES:
                texts[f"{sub}/{path.name}"] = path.read_text(errors="replace")
    return parse_chart(chart, version, (directory / "values.yaml").read_text(), texts)


def library(source: ChartSource, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], ChartFacts]:
    """(chart, version) -> facts for each wanted chart the mirror has."""
    found = {}
    for chart, version in set(wanted):
        root = charts_root(source, version)
        if root is not None and (facts := read_chart(root, chart, version)) is not None:
            found[(chart, version)] = facts
    return found


def _module_cache() -> Path:
    if cache := os.environ.get("GOMODCACHE"):
        return Path(cache)
    if gopath := os.environ.get("GOPATH"):
        return Path(gopath.split(os.pathsep)[0]) / "pkg" / "mod"
    return Path.home() / "go" / "pkg" / "mod"


def notes_dir(root: Path) -> Path | None:
    """Where the release notes of the mirror at `root` are, None when nowhere."""
    own = root / "releasenotes" / "notes"
    if own.is_dir():
        return own
    source = root / "SOURCE"
    if source.is_file():
        module = _module_cache() / source.read_text().strip() / "releasenotes" / "notes"
        if module.is_dir():
            return module
    return None


@functools.cache
def note_ids(directory: Path) -> frozenset[str]:
    return frozenset(p.name for p in directory.glob("*.yaml"))


def release_notes(source: ChartSource, versions: Iterable[str]) -> tuple[dict[str, frozenset[str]], Mapping[str, Path]]:
    """Version -> its note files, and version -> the directory holding them, for versions that have notes."""
    available, where = {}, {}
    for version in set(versions):
        root = charts_root(source, version)
        if root is not None and (directory := notes_dir(root)) is not None:
            available[version], where[version] = note_ids(directory), directory
    return available, where


@functools.cache
def read_note(directory: Path, note_id: str) -> Note:
    return parse_note(note_id, (directory / note_id).read_text(errors="replace"))
