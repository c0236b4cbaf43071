"""The toolchain manifest (toolchain/versions): the one place versions are named, and the files that must
repeat them (go.mod, requirements.txt) agree with it, as both readers (harness.toolchain and the build
scripts' versions.sh) check."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from harness.toolchain import ISTIO_VERSIONS, KUBE_VERSION, MANIFEST, TOOLCHAIN, disagreements, read_manifest

ROOT = Path(__file__).resolve().parent.parent


def bash_check(toolchain: Path) -> subprocess.CompletedProcess[str]:
    """versions.sh's check_versions, as build-all.sh runs it before building anything."""
    return subprocess.run(["bash", "-c", f'set -euo pipefail; source "{toolchain}/versions.sh"; check_versions'],
                          capture_output=True, text=True, check=False)


def copy_with(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """A copy of toolchain/ (and requirements.txt beside it) with `old` replaced by `new` in one file."""
    toolchain = tmp_path / "toolchain"
    shutil.copytree(TOOLCHAIN, toolchain, symlinks=True)
    shutil.copy(ROOT / "requirements.txt", tmp_path / "requirements.txt")
    target = toolchain / file
    assert old in target.read_text()
    target.write_text(target.read_text().replace(old, new, 1))
    return toolchain


def test_every_repeated_pin_agrees_with_the_manifest() -> None:
    pins = read_manifest()
    assert disagreements(pins) == []
    assert bash_check(TOOLCHAIN).returncode == 0, bash_check(TOOLCHAIN).stderr
    # Every Go-built tool (the Istio lines aside) is actually checked against some file.
    assert all(p.also_in for p in pins if p.name not in ("actionlint",))


def test_a_go_mod_that_moved_alone_is_named_with_both_versions(tmp_path: Path) -> None:
    etcd = "go.etcd.io/etcd/server/v3"
    toolchain = copy_with(tmp_path, "etcd/go.mod", f"{etcd} v3.5.21", f"{etcd} v3.5.22")
    expected = "toolchain/versions pins etcd 3.5.21, but toolchain/etcd/go.mod pins go.etcd.io/etcd/server/v3 at 3.5.22"
    assert [m for m in disagreements(read_manifest(toolchain / "versions"), toolchain) if "etcd" in m] == [
        f"{expected}: make them agree"
    ]
    result = bash_check(toolchain)
    assert result.returncode != 0 and expected in result.stderr


def test_an_istio_version_must_name_the_module_of_its_minor(tmp_path: Path) -> None:
    toolchain = copy_with(tmp_path, "versions", "1.31.0  ", "1.32.0  ")
    problems = disagreements(read_manifest(toolchain / "versions"), toolchain)
    assert problems == ["istio 1.32.0 names charts/istio-1.31/go.mod; it needs charts/istio-1.32/go.mod pinning "
                        "istio.io/istio (charts/add-minor.sh makes it)"]
    result = bash_check(toolchain)
    assert result.returncode != 0 and "istio 1.32.0 names charts/istio-1.31/go.mod" in result.stderr


def test_readers_see_the_manifest_lines() -> None:
    text = MANIFEST.read_text()
    assert tuple(re.findall(r"^istio\s+(\S+)", text, re.MULTILINE)) == ISTIO_VERSIONS
    assert re.search(rf"^kubernetes\s+{re.escape(KUBE_VERSION)}\s", text, re.MULTILINE)


def test_kubernetes_staging_replaces_follow_its_version() -> None:
    """kube/go.mod repeats k8s.io/kubernetes' staging replaces at v0.<minor>.<patch> of the same release."""
    staging = re.findall(r"=> k8s\.io/\S+ v(\S+)", (TOOLCHAIN / "kube" / "go.mod").read_text())
    assert staging and set(staging) == {"0." + KUBE_VERSION.split(".", 1)[1]}


def test_toolchain_scripts_pass_shellcheck() -> None:
    scripts = sorted(TOOLCHAIN.glob("*.sh")) + sorted(TOOLCHAIN.glob("charts/*.sh"))
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "shellcheck"), *map(str, scripts)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
