"""The CI workflows (.github/workflows) and the scripts their jobs run (scripts/ci), without a cluster.

actionlint must find nothing; the matrix must be what scripts/ci/stacks lists from the stack files; apply
must order prod last behind its environment with one run per stack; secrets reach the scripts only through
`env:`. The scripts' GitHub-facing parts run against stand-ins (a fake `gh`, a fake `mesh review`); the
same scripts against a real control plane and Pulumi engine are in tests/e2e/test_ci_scripts.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.toolchain import skip_or_fail_missing

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
CI = ROOT / "scripts" / "ci"
MATRIX_STACK = "${{ matrix.stack }}"


def workflow(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(wf: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as the boolean true.
    return wf.get("on", wf.get(True))


def run_script(*args: str | Path, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, check=False)


def steps_running(job: dict[str, Any]) -> list[str]:
    return [s["run"] for s in job["steps"] if "run" in s]


# ---- actionlint ---------------------------------------------------------------------------------------


def test_actionlint_finds_nothing() -> None:
    result = run_script(CI / "actionlint", "-oneline")
    if result.returncode == 127:
        skip_or_fail_missing(f"actionlint unavailable: {result.stderr.strip()}")
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_shell_scripts_pass_shellcheck() -> None:
    scripts = [p for p in sorted(CI.iterdir()) if p.read_text().startswith("#!/usr/bin/env bash")]
    assert {p.name for p in scripts} >= {"apply", "setup", "actionlint"}
    result = run_script(ROOT / ".venv" / "bin" / "shellcheck", *scripts)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- the matrix ---------------------------------------------------------------------------------------


def stack_files(root: Path) -> list[str]:
    return sorted(p.name.split(".")[1] for p in root.glob("Pulumi.*.yaml"))


def stacks_json(*args: str, script: Path = CI / "stacks") -> list[dict[str, str]]:
    result = run_script(script, *args)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1, "one line: it goes into $GITHUB_OUTPUT as name=value"
    return json.loads(result.stdout)


def test_stacks_lists_the_stack_files() -> None:
    entries = stacks_json()
    assert [e["stack"] for e in entries] == stack_files(ROOT) == ["dev", "prod"]
    assert {e["stack"]: e["kubeconfig_secret"] for e in entries} == {"dev": "KUBECONFIG_DEV", "prod": "KUBECONFIG_PROD"}
    before, prod = stacks_json("--except", "prod"), stacks_json("--only", "prod")
    assert [e["stack"] for e in before] == ["dev"] and [e["stack"] for e in prod] == ["prod"]


def test_stacks_follows_files_added_and_removed(tmp_path: Path) -> None:
    """A stack file added (or removed) is a matrix entry added (or removed): nothing to edit in the workflows."""
    script = tmp_path / "scripts" / "ci" / "stacks"
    script.parent.mkdir(parents=True)
    shutil.copy(CI / "stacks", script)
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.eu-west.yaml"):
        (tmp_path / name).write_text("config: {}\n")
    assert stacks_json(script=script) == [
        {"stack": "dev", "kubeconfig_secret": "KUBECONFIG_DEV"},
        {"stack": "eu-west", "kubeconfig_secret": "KUBECONFIG_EU_WEST"},
    ]
    assert [e["stack"] for e in stacks_json(script=script)] == stack_files(tmp_path)
    assert stacks_json("--only", "prod", script=script) == [], "no prod stack: the prod job is skipped"
    (tmp_path / "Pulumi.x$(id).yaml").write_text("config: {}\n")
    refused = run_script(script)
    assert refused.returncode != 0 and "not a stack name" in refused.stderr


def matrix_source(job: dict[str, Any]) -> str:
    include = job["strategy"]["matrix"]["include"]
    m = re.fullmatch(r"\$\{\{ fromJSON\(needs\.stacks\.outputs\.([\w-]+)\) \}\}", include)
    assert m, f"matrix is computed by the stacks job, not a hand list: {include!r}"
    return m.group(1)


def stacks_job_outputs(wf: dict[str, Any]) -> dict[str, str]:
    """Output name -> the scripts/ci/stacks command line that computes it."""
    job = wf["jobs"]["stacks"]
    commands = {}
    for line in "\n".join(steps_running(job)).splitlines():
        m = re.fullmatch(r'echo "([\w-]+)=\$\((scripts/ci/stacks[^)]*)\)" >> "\$GITHUB_OUTPUT"', line.strip())
        if m:
            commands[m.group(1)] = m.group(2)
    for name, value in job["outputs"].items():
        assert value == f"${{{{ steps.list.outputs.{name} }}}}"
    return {name: commands[name] for name in job["outputs"]}


def test_preview_matrix_is_every_stack() -> None:
    wf = workflow("preview.yml")
    assert set(triggers(wf)) == {"pull_request"}
    outputs = stacks_job_outputs(wf)
    assert outputs[matrix_source(wf["jobs"]["preview"])] == "scripts/ci/stacks"


def test_apply_matrix_is_every_stack_with_prod_last() -> None:
    wf = workflow("apply.yml")
    assert triggers(wf) == {"push": {"branches": ["main"]}}
    outputs = stacks_job_outputs(wf)
    jobs = wf["jobs"]
    assert outputs[matrix_source(jobs["apply"])] == "scripts/ci/stacks --except prod"
    assert outputs[matrix_source(jobs["apply-prod"])] == "scripts/ci/stacks --only prod"
    # Together they are every stack file, each once.
    before, prod = stacks_json("--except", "prod"), stacks_json("--only", "prod")
    assert sorted(e["stack"] for e in before + prod) == stack_files(ROOT)
    # prod waits for every other stack and runs only if they all succeeded (or there were none).
    assert "apply" in jobs["apply-prod"]["needs"]
    condition = " ".join(jobs["apply-prod"]["if"].split())
    assert "!cancelled()" in condition and "always()" not in condition
    assert "(needs.apply.result == 'success' || needs.apply.result == 'skipped')" in condition


def test_apply_environment_and_concurrency() -> None:
    jobs = workflow("apply.yml")["jobs"]
    assert jobs["apply-prod"]["environment"] == "prod"
    assert "environment" not in jobs["apply"], "only prod waits for approval"
    for name in ("apply", "apply-prod"):
        assert jobs[name]["concurrency"] == {"group": f"apply-{MATRIX_STACK}", "cancel-in-progress": False}
        assert steps_running(jobs[name])[-1] == 'scripts/ci/apply "$STACK"'
        assert jobs[name]["env"]["STACK"] == MATRIX_STACK
    assert "concurrency" not in workflow("apply.yml"), "no run-level group: it would cancel a waiting run"


def test_a_fleet_file_runs_the_fleet_instead_of_the_matrix(tmp_path: Path) -> None:
    """With fleet.yaml in the repo, the matrix jobs are skipped and the fleet runs: unprotected stacks first,
    then, after they all held their gates and behind the `prod` environment, the protected ones."""
    wf = workflow("apply.yml")
    jobs = wf["jobs"]
    assert "scripts/ci/stacks --fleet" in "\n".join(steps_running(jobs["stacks"]))
    assert jobs["stacks"]["outputs"]["fleet"] == "${{ steps.list.outputs.fleet }}"
    for name in ("apply", "apply-prod"):
        assert "needs.stacks.outputs.fleet != 'true'" in " ".join(jobs[name]["if"].split()), name
    assert jobs["fleet"]["if"] == "needs.stacks.outputs.fleet == 'true'" and "environment" not in jobs["fleet"]
    protected = jobs["fleet-protected"]
    assert protected["environment"] == "prod" and protected["needs"] == ["stacks", "fleet"]
    condition = " ".join(protected["if"].split())
    assert "!cancelled()" in condition and "needs.fleet.result == 'success'" in condition
    assert steps_running(jobs["fleet"])[-1] == "scripts/ci/fleet unprotected"
    assert steps_running(protected)[-1] == "scripts/ci/fleet protected"
    for job in (jobs["fleet"], protected):
        assert job["concurrency"]["cancel-in-progress"] is False, "a fleet run is never cancelled mid-wave"
    assert jobs["fleet"]["concurrency"]["group"] != protected["concurrency"]["group"]
    # scripts/ci/stacks --fleet says whether the repo has a fleet file.
    script = tmp_path / "scripts" / "ci" / "stacks"
    script.parent.mkdir(parents=True)
    shutil.copy(CI / "stacks", script)
    assert run_script(script, "--fleet").stdout.strip() == "false"
    (tmp_path / "fleet.yaml").write_text("waves: [[dev]]\n")
    assert run_script(script, "--fleet").stdout.strip() == "true"
    refused = run_script(CI / "fleet", "everything")
    assert refused.returncode == 2 and "PART is unprotected, protected or plan" in refused.stderr
    # With a fleet file, every matrix entry reaches its cluster as the fleet does: through KUBECONFIG_FLEET.
    (tmp_path / "Pulumi.dev.yaml").write_text("config: {}\n")
    assert stacks_json(script=script) == [{"stack": "dev", "kubeconfig_secret": "KUBECONFIG_FLEET"}]


def test_a_fleet_file_adds_the_fleet_plan_to_pull_requests() -> None:
    """preview.yml: with fleet.yaml, one job previews and reviews every stack by wave (`mesh fleet plan`) and
    posts it as one comment, also when the plan refuses; the per-stack previews run as before."""
    wf = workflow("preview.yml")
    jobs = wf["jobs"]
    assert stacks_job_outputs(wf)["fleet"] == "scripts/ci/stacks --fleet"
    job = jobs["fleet-plan"]
    condition = " ".join(job["if"].split())
    assert "needs.stacks.outputs.fleet == 'true'" in condition
    assert "github.event.pull_request.head.repo.full_name == github.repository" in condition, "no secrets for forks"
    assert "if" not in jobs["preview"] or "fleet" not in jobs["preview"]["if"], "stacks are previewed either way"
    steps = job["steps"]
    plan = next(i for i, s in enumerate(steps) if s.get("id") == "plan")
    assert steps[plan]["run"] == 'scripts/ci/fleet plan "$RUNNER_TEMP/fleet-plan.md"'
    comment = steps[plan + 1]
    assert comment["run"] == 'scripts/ci/comment "$PR_NUMBER" "$RUNNER_TEMP/fleet-plan.md"'
    assert "!cancelled()" in comment["if"] and "steps.plan.outcome == 'failure'" in comment["if"]
    assert job["permissions"] == {"contents": "read", "pull-requests": "write"}


def test_preview_job_runs_the_review_then_comments_then_previews() -> None:
    job = workflow("preview.yml")["jobs"]["preview"]
    steps = job["steps"]
    review = next(i for i, s in enumerate(steps) if s.get("id") == "review")
    assert steps[review]["run"].startswith('scripts/ci/preview "$STACK" ')
    comment = steps[review + 1]
    assert comment["run"].startswith('scripts/ci/comment "$PR_NUMBER" ')
    # The comment is posted when the review failed too (an invalid config), and the job still fails.
    assert "!cancelled()" in comment["if"] and "steps.review.outcome == 'failure'" in comment["if"]
    pulumi = steps[-1]
    assert pulumi["uses"].startswith("pulumi/actions@") and "if" not in pulumi, "preview only after a good review"
    assert pulumi["with"] == {
        "command": "preview", "stack-name": MATRIX_STACK, "diff": True, "upsert": True,
        "comment-on-pr": True, "edit-pr-comment": True, "github-token": "${{ github.token }}",
    }
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["python-version"] == "3.11"
    assert 'scripts/ci/setup "$STACK"' in steps_running(job)
    assert "head.repo.full_name == github.repository" in job["if"], "fork PRs get no secrets: not previewed"


# ---- permissions, pins, secrets -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["preview.yml", "apply.yml"])
def test_least_privilege_and_pinned_actions(name: str) -> None:
    wf = workflow(name)
    assert wf["permissions"] == {"contents": "read"}
    for job_name, job in wf["jobs"].items():
        expected = {"contents": "read"}
        if name == "preview.yml" and job_name in ("preview", "fleet-plan"):
            expected["pull-requests"] = "write"
        assert job["permissions"] == expected, job_name
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+|[0-9a-f]{40})", step["uses"]), step["uses"]
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


@pytest.mark.parametrize("name", ["preview.yml", "apply.yml"])
def test_secrets_only_through_env_and_never_traced(name: str) -> None:
    wf = workflow(name)
    for job in wf["jobs"].values():
        for step in job["steps"]:
            assert "secrets." not in step.get("run", "") and "secrets[" not in step.get("run", "")
            assert "${{" not in step.get("run", ""), "values reach run: through env, never spliced into the code"
        for key, value in job.get("env", {}).items():
            if "secrets" in str(value):
                assert value == f"${{{{ secrets.{key} }}}}", key
    text = (WORKFLOWS / name).read_text()
    assert set(re.findall(r"secrets\.(\w+)", text)) <= {
        "PULUMI_ACCESS_TOKEN", "PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "KUBECONFIG_FLEET"}
    matrix_jobs = [j for j in wf["jobs"].values() if "matrix" in j.get("strategy", {})]
    assert text.count("secrets[matrix.kubeconfig_secret]") == len(matrix_jobs)
    assert text.count("secrets.KUBECONFIG_FLEET") == len(wf["jobs"]) - len(matrix_jobs) - 1  # the fleet jobs
    for path in [WORKFLOWS / name, *CI.iterdir()]:
        assert not re.search(r"set -[a-wyz]*x|set -o xtrace|bash -x", path.read_text()), path


# ---- the scripts against stand-ins ----------------------------------------------------------------------


def write_exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


FAKE_GH = """#!{python}
import json, os, sys
log = os.environ["FAKE_GH_LOG"]
args = sys.argv[1:]
body = sys.stdin.read() if "--input" in args else None
with open(log, "a") as f:
    f.write(json.dumps({{"args": args, "input": body}}) + "\\n")
if "--method" not in args:
    for c in json.loads(os.environ["FAKE_GH_COMMENTS"]):
        print(json.dumps([c["id"], c["body"]]))
"""


def run_comment(tmp_path: Path, comments: list[dict[str, Any]], body: str) -> list[dict[str, Any]]:
    bindir = tmp_path / "bin"
    write_exe(bindir / "gh", FAKE_GH.format(python=sys.executable))
    log = tmp_path / "gh.log"
    log.unlink(missing_ok=True)
    body_file = tmp_path / "body.md"
    body_file.write_text(body)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "FAKE_GH_LOG": str(log),
           "FAKE_GH_COMMENTS": json.dumps(comments), "GITHUB_REPOSITORY": "acme/istio-mesh", "GH_TOKEN": "t"}
    result = run_script(CI / "comment", "17", body_file, env=env)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_comment_is_created_once_then_updated(tmp_path: Path) -> None:
    body = "<!-- istio-mesh-review:dev -->\n\n### Upgrade review: stack `dev`\n\nline\n"
    calls = run_comment(tmp_path, [{"id": 1, "body": "LGTM"},
                                   {"id": 2, "body": "<!-- istio-mesh-review:prod -->\nprod's"}], body)
    assert calls[0]["args"][:3] == ["api", "--paginate", "repos/acme/istio-mesh/issues/17/comments"]
    assert calls[1]["args"][:4] == ["api", "--method", "POST", "repos/acme/istio-mesh/issues/17/comments"]
    assert json.loads(calls[1]["input"]) == {"body": body}

    calls = run_comment(tmp_path, [{"id": 1, "body": "LGTM"},
                                   {"id": 2, "body": "<!-- istio-mesh-review:prod -->\nprod's"},
                                   {"id": 3, "body": "<!-- istio-mesh-review:dev -->\nolder"}], body)
    assert len(calls) == 2
    assert calls[1]["args"][:4] == ["api", "--method", "PATCH", "repos/acme/istio-mesh/issues/comments/3"]
    assert json.loads(calls[1]["input"]) == {"body": body}


def test_comment_refuses_a_body_without_marker(tmp_path: Path) -> None:
    body_file = tmp_path / "body.md"
    body_file.write_text("### no marker\n")
    result = run_script(CI / "comment", "17", body_file, env={**os.environ, "GITHUB_REPOSITORY": "a/b"})
    assert result.returncode == 2 and "marker" in result.stderr


KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- cluster: {server: "https://10.0.0.1:6443", certificate-authority-data: Q0EK}
  name: c
users:
- name: u
  user:
    client-key-data: S0VZLXNlY3JldC1rZXk=
    token: "sekrit-token-123"
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""


@pytest.mark.parametrize("encoding", ["yaml", "base64"])
def test_kubeconfig_written_private_and_masked(tmp_path: Path, encoding: str) -> None:
    data = KUBECONFIG if encoding == "yaml" else base64.b64encode(KUBECONFIG.encode()).decode()
    github_env = tmp_path / "github_env"
    env = {**os.environ, "KUBECONFIG_DATA": data, "RUNNER_TEMP": str(tmp_path), "GITHUB_ENV": str(github_env)}
    result = run_script(CI / "kubeconfig", "dev", env=env)
    assert result.returncode == 0, result.stderr
    written = tmp_path / "kubeconfig-dev"
    assert written.read_text() == KUBECONFIG
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert github_env.read_text() == f"KUBECONFIG={written}\n"
    lines = result.stdout.splitlines()
    masks = [line.removeprefix("::add-mask::") for line in lines if line.startswith("::add-mask::")]
    assert {"S0VZLXNlY3JldC1rZXk=", "sekrit-token-123"} <= set(masks)
    others = "\n".join(line for line in lines if not line.startswith("::add-mask::"))
    assert "sekrit" not in others and "S0VZ" not in others and "server" not in others + result.stderr


def test_kubeconfig_missing_is_a_warning(tmp_path: Path) -> None:
    env = {**os.environ, "KUBECONFIG_DATA": "", "KUBECONFIG_SECRET": "KUBECONFIG_DEV", "RUNNER_TEMP": str(tmp_path)}
    result = run_script(CI / "kubeconfig", "dev", env=env)
    assert result.returncode == 0
    assert result.stdout.startswith("::warning::") and "KUBECONFIG_DEV" in result.stdout
    assert not (tmp_path / "kubeconfig-dev").exists()


FAKE_REVIEW = """#!/bin/sh
# Stands in for .venv/bin/python: answers `-m mesh review --stack STACK` (or `-m mesh fleet plan --fleet
# fleet.yaml`) as $FAKE_RC with $FAKE_OUT.
[ "$1 $2 $3 $4" = "-m mesh review --stack" ] || [ "$*" = "-m mesh fleet plan --fleet fleet.yaml" ] || exit 99
printf '%s\\n' "$FAKE_OUT"
echo "diagnostics on stderr stay in the log" >&2
exit "$FAKE_RC"
"""


def fake_review_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "scripts" / "ci").mkdir(parents=True)
    shutil.copy(CI / "preview", repo / "scripts" / "ci" / "preview")
    write_exe(repo / ".venv" / "bin" / "python", FAKE_REVIEW)
    return repo


@pytest.mark.parametrize(("rc", "out", "heading"), [
    (0, "#### Control plane\n- revision `1-31-0` added", "### Upgrade review: stack `dev`\n"),
    (2, "the stack config has 1 problem(s):\n  - istio-mesh:tags.stable: points at ```x```", "the config is invalid"),
    (1, "", "`mesh review` failed (exit 1)"),
])
def test_preview_body(tmp_path: Path, rc: int, out: str, heading: str) -> None:
    repo = fake_review_repo(tmp_path)
    summary = tmp_path / "summary.md"
    env = {**os.environ, "FAKE_RC": str(rc), "FAKE_OUT": out, "REVIEW_COMMIT": "abc123",
           "GITHUB_STEP_SUMMARY": str(summary)}
    result = run_script(repo / "scripts" / "ci" / "preview", "dev", tmp_path / "body.md", env=env)
    assert result.returncode == rc
    body = (tmp_path / "body.md").read_text()
    assert body.startswith("<!-- istio-mesh-review:dev -->\n") and heading in body
    assert out in body and "abc123" in body and "stderr" not in body
    assert result.stdout == body
    assert summary.read_text() == body.removeprefix("<!-- istio-mesh-review:dev -->")
    if rc == 2:
        assert f"````text\n{out}\n````" in body, "a message holding ``` cannot close its block"


@pytest.mark.parametrize(("rc", "heading"), [(0, "### Fleet plan: `fleet.yaml`\n"),
                                             (2, "### Fleet plan: `fleet.yaml`: :x: a stack refuses (below)\n")])
def test_fleet_plan_body(tmp_path: Path, rc: int, heading: str) -> None:
    """The fleet plan's comment: its own marker, the plan's Markdown whatever its exit, and none of the engine's
    `[stack] ...` progress lines (those go to the job log)."""
    repo = fake_review_repo(tmp_path)
    plan = "## `c1` (wave 1)\n\nc1: 2 to update\n### Fleet plan\n\n| wave | stack |\n|---|---|\n| 1 | c1 |"
    out = f"[c1] Previewing update (c1):\n{plan}\n[c1]  ~ kubernetes:core/v1:Namespace shop update"
    env = {**os.environ, "FAKE_RC": str(rc), "FAKE_OUT": out, "REVIEW_COMMIT": "abc123"}
    result = run_script(repo / "scripts" / "ci" / "preview", "--fleet", tmp_path / "body.md", env=env)
    assert result.returncode == rc
    body = (tmp_path / "body.md").read_text()
    assert body.startswith("<!-- istio-mesh-review:fleet.yaml -->\n") and heading in body
    assert plan in body and "abc123" in body and "[c1]" not in body
    assert result.stdout.startswith("[c1] Previewing update (c1):\n[c1]  ~ kubernetes:core/v1:Namespace")


def test_preview_body_fits_a_comment(tmp_path: Path) -> None:
    repo = fake_review_repo(tmp_path)
    summary = tmp_path / "summary.md"
    env = {**os.environ, "FAKE_RC": "0", "FAKE_OUT": "x" * 100_000, "GITHUB_STEP_SUMMARY": str(summary)}
    result = run_script(repo / "scripts" / "ci" / "preview", "dev", tmp_path / "body.md", env=env)
    assert result.returncode == 0
    assert len((tmp_path / "body.md").read_text()) < 65_536
    assert "x" * 100_000 in summary.read_text(), "the job summary keeps the whole review"
