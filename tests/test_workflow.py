"""The GitHub workflow, checked statically: no pull request reaches a self-hosted runner,
and the kernel matrix is generated from fixtures/kernels.toml.

GitHub is not reachable from here, so the workflow's ``on:`` and every job's ``if:`` are
read with PyYAML and the ``if:`` expressions evaluated by a small evaluator of GitHub's
expression syntax, for the contexts a pull request from a fork produces (the attacker picks
the branch name, the title, the head repository; the maintainers' ``vars`` take every value).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bindlab.vm import kernel_list

yaml = pytest.importorskip("yaml", reason="PyYAML (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "ci" / "github" / "bindlab.yml"
GITHUB_HOSTED = re.compile(r"^(ubuntu|windows|macos)-[0-9a-z.-]+$")
# Triggers whose runs an outsider starts and that run with the base repository's workflow,
# token and caches: none of them may appear (pull_request_target + a label included).
FORBIDDEN_TRIGGERS = {
    "pull_request_target", "issue_comment", "issues", "workflow_run", "discussion",
    "discussion_comment", "pull_request_review", "pull_request_review_comment", "fork", "watch",
}  # fmt: skip


# -- a small evaluator of GitHub Actions expressions --------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>==|!=|<=|>=|&&|\|\||[!<>(),])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_*-]+|\[[^\]]*\])*))"
)


class Expr:
    """Parse and evaluate one expression (``${{ }}`` stripped) against a context dict."""

    FUNCTIONS = {"contains", "startswith", "endswith", "always", "success", "failure", "cancelled"}

    def __init__(self, text: str) -> None:
        text = text.strip()
        if text.startswith("${{") and text.endswith("}}"):
            text = text[3:-2]
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text.rstrip()):
            m = _TOKEN.match(text, pos)
            if not m:
                raise ValueError(f"cannot parse {text[pos:]!r} in {text!r}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.text = text

    def evaluate(self, ctx: dict[str, Any], status: str = "success") -> Any:
        self.i, self.ctx, self.status, self.used_status = 0, ctx, status, False
        value = self._or()
        if self.i != len(self.tokens):
            raise ValueError(f"trailing {self.tokens[self.i :]} in {self.text!r}")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def _take(self, want: str | None = None) -> tuple[str, str]:
        tok = self.tokens[self.i]
        if want is not None and tok[1] != want:
            raise ValueError(f"expected {want!r}, got {tok[1]!r} in {self.text!r}")
        self.i += 1
        return tok

    def _or(self) -> Any:
        left = self._and()
        while self._peek() == "||":
            self._take()
            right = self._and()
            left = left if truthy(left) else right
        return left

    def _and(self) -> Any:
        left = self._cmp()
        while self._peek() == "&&":
            self._take()
            right = self._cmp()
            left = right if truthy(left) else left
        return left

    def _cmp(self) -> Any:
        left = self._unary()
        while self._peek() in ("==", "!=", "<", ">", "<=", ">="):
            op = self._take()[1]
            right = self._unary()
            if op in ("==", "!="):
                same = _loose(left) == _loose(right)
                left = same if op == "==" else not same
            else:
                raise ValueError(f"ordering comparison {op} not supported in {self.text!r}")
        return left

    def _unary(self) -> Any:
        if self._peek() == "!":
            self._take()
            return not truthy(self._unary())
        return self._atom()

    def _atom(self) -> Any:
        kind, tok = self._take()
        if tok == "(":
            value = self._or()
            self._take(")")
            return value
        if kind == "str":
            return tok[1:-1].replace("''", "'")
        if kind == "num":
            return float(tok)
        if tok in ("true", "false"):
            return tok == "true"
        if tok == "null":
            return None
        if self._peek() == "(":
            return self._call(tok.lower())
        return lookup(self.ctx, tok)

    def _call(self, name: str) -> Any:
        if name not in self.FUNCTIONS:
            raise ValueError(f"function {name}() not supported by this check: extend it")
        self._take("(")
        args = []
        while self._peek() != ")":
            args.append(self._or())
            if self._peek() == ",":
                self._take()
        self._take(")")
        if name in ("always", "success", "failure", "cancelled"):
            self.used_status = True
            return name == "always" or name == self.status
        a, b = (str(x if x is not None else "").lower() for x in args)
        return {"contains": b in a, "startswith": a.startswith(b), "endswith": a.endswith(b)}[name]


def truthy(v: Any) -> bool:
    return v not in (None, False, 0, 0.0, "")


def _loose(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else v  # GitHub compares strings ignoring case


def lookup(ctx: dict[str, Any], path: str) -> Any:
    """``github.event.pull_request.head.repo.fork`` in ``ctx``; null when missing, as GitHub."""
    cur: Any = ctx
    for part in re.findall(r"[^.\[\]]+|\[[^\]]*\]", path):
        key = part.strip("[]'") if part.startswith("[") else part
        cur = cur.get(key) if isinstance(cur, dict) else None
    return cur


def job_may_run(job: dict[str, Any], ctx: dict[str, Any]) -> bool:
    """Whether ``job``'s ``if:`` holds in ``ctx`` (no ``if:``: it runs)."""
    cond = job.get("if")
    if cond is None:
        return True
    e = Expr(str(cond))
    value = truthy(e.evaluate(ctx))
    return value  # without a status function GitHub adds success(): true here


# -- what a fork's pull request looks like to the workflow --------------------------------


def fork_contexts(wf: dict[str, Any]) -> list[dict[str, Any]]:
    """Every context a fork's pull request can produce, over all values of the vars used."""
    text = json.dumps(wf)
    names = sorted(set(re.findall(r"\bvars\.([A-Za-z0-9_]+)", text)))
    out = []
    for values in itertools.product(["true", "false", "", "1"], repeat=len(names)):
        for head_ref in ("main", "refs/heads/main", "feature"):
            out.append(
                {
                    "github": {
                        "event_name": "pull_request",
                        "ref": "refs/pull/7/merge",
                        "ref_name": "7/merge",
                        "head_ref": head_ref,
                        "base_ref": "main",
                        "actor": "mallory",
                        "triggering_actor": "mallory",
                        "repository": "owner/bindlab",
                        "event": {
                            "action": "opened",
                            "pull_request": {
                                "head": {"ref": head_ref, "repo": {"fork": True}},
                                "labels": [{"name": "privileged"}],
                                "title": "main",
                            },
                        },
                    },
                    "vars": dict(zip(names, values, strict=True)),
                    "inputs": {},
                }
            )
    return out


def triggers(wf: dict[str, Any]) -> dict[str, Any]:
    on = wf.get("on", wf.get(True))  # PyYAML reads the bare key `on` as the boolean true
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return dict(on or {})


def self_hosted(job: dict[str, Any]) -> bool:
    labels = job.get("runs-on")
    labels = [labels] if isinstance(labels, str) else list(labels or [])
    return not (len(labels) == 1 and GITHUB_HOSTED.match(str(labels[0])))


def privileged_routes(wf: dict[str, Any]) -> list[str]:
    """What lets a fork's pull request reach a self-hosted runner ([] when nothing does)."""
    problems = [
        f"trigger {t} runs outsiders' events" for t in triggers(wf) if t in FORBIDDEN_TRIGGERS
    ]
    for name, job in wf["jobs"].items():
        runs_on = json.dumps(job.get("runs-on"))
        if "${{" in runs_on:
            problems.append(f"job {name}: runs-on is an expression ({runs_on})")
            continue
        if not self_hosted(job):
            continue
        if "pull_request" in triggers(wf):
            for ctx in fork_contexts(wf):
                if job_may_run(job, ctx):
                    problems.append(
                        f"job {name} ({runs_on}) runs for a fork's pull_request "
                        f"(head_ref={ctx['github']['head_ref']!r}, vars={ctx['vars']})"
                    )
                    break
    return problems


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    """The workflow as PyYAML reads it."""
    return yaml.safe_load(WORKFLOW.read_text())


def test_expression_evaluator_follows_github_semantics():
    ctx = {"github": {"event_name": "push", "ref": "refs/heads/main"}, "vars": {"X": "true"}}
    assert Expr("github.event_name == 'PUSH' && github.ref == 'refs/heads/main'").evaluate(ctx)
    assert Expr("${{ vars.MISSING || 'fallback' }}").evaluate(ctx) == "fallback"
    assert not truthy(Expr("!(vars.X == 'true')").evaluate(ctx))
    assert Expr("startsWith(github.ref, 'refs/heads/')").evaluate(ctx) is True
    with pytest.raises(ValueError, match=r"function fromjson\(\) not supported"):
        Expr("fromJSON(vars.X)").evaluate(ctx)


def test_self_hosted_jobs_cannot_run_for_a_fork_pull_request(workflow):
    hosted = [n for n, j in workflow["jobs"].items() if self_hosted(j)]
    assert hosted == ["privileged"], "the test must see the self-hosted job it guards"
    assert "pull_request" in triggers(workflow), "pull requests still get the GitHub-hosted jobs"
    assert privileged_routes(workflow) == []


def test_self_hosted_job_runs_for_main_and_for_a_maintainer_dispatch(workflow):
    job = workflow["jobs"]["privileged"]
    on = {"vars": {"BINDLAB_PRIVILEGED_RUNNER": "true"}}
    push = {**on, "github": {"event_name": "push", "ref": "refs/heads/main"}}
    dispatch = {**on, "github": {"event_name": "workflow_dispatch", "ref": "refs/heads/x"}}
    assert job_may_run(job, push) and job_may_run(job, dispatch)
    assert not job_may_run(job, {**push, "github": {"event_name": "push", "ref": "refs/heads/x"}})
    assert not job_may_run(job, {**dispatch, "vars": {}})  # no runner configured: no job


def test_the_check_catches_each_way_in(workflow):
    """The check can fail: each classic hole, put into a copy of the workflow, is reported."""
    wf = copy.deepcopy(workflow)
    wf["jobs"]["privileged"]["if"] += " || github.event_name == 'pull_request'"
    assert any("runs for a fork's pull_request" in p for p in privileged_routes(wf))
    wf = copy.deepcopy(workflow)
    wf["jobs"]["privileged"]["if"] += " || github.head_ref == 'main'"
    assert any("head_ref='main'" in p for p in privileged_routes(wf))
    wf = copy.deepcopy(workflow)
    wf["jobs"]["host"]["runs-on"] = "${{ vars.BINDLAB_RUNNER || 'ubuntu-24.04' }}"  # the old one
    assert privileged_routes(wf) == [
        f"job host: runs-on is an expression ({json.dumps(wf['jobs']['host']['runs-on'])})"
    ]
    wf = copy.deepcopy(workflow)
    wf[True]["pull_request_target"] = {"types": ["labeled"]}
    assert "trigger pull_request_target runs outsiders' events" in privileged_routes(wf)


def test_every_job_has_minimal_permissions_and_checkouts_keep_no_token(workflow):
    assert workflow["permissions"] == {}
    for name, job in workflow["jobs"].items():
        assert job.get("permissions") == {"contents": "read"}, name
        for step in job["steps"]:
            uses = step.get("uses", "")
            if uses:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", uses), f"{name}: {uses}"
            if uses.startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name


def test_matrix_is_generated_from_the_kernel_list(workflow, tmp_path):
    jobs = workflow["jobs"]
    assert jobs["vm"]["strategy"]["matrix"] == "${{ fromJSON(needs.kernels.outputs.matrix) }}"
    assert jobs["vm"]["needs"] == "kernels"
    assert jobs["kernels"]["outputs"]["matrix"] == "${{ steps.list.outputs.matrix }}"
    step = next(s for s in jobs["kernels"]["steps"] if s.get("id") == "list")
    out = tmp_path / "github_output"
    env = dict(
        os.environ,
        GITHUB_OUTPUT=str(out),
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    )
    subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=ROOT, env=env, check=True)
    key, _, value = out.read_text().strip().partition("=")
    entries = kernel_list.load(str(ROOT / "fixtures" / "kernels.toml"))
    assert key == "matrix" and json.loads(value) == kernel_list.matrix(entries)
    text = WORKFLOW.read_text()
    for e in entries:  # generated, not copied: no kernel of the list is spelled here
        assert e.kernel not in text and e.name not in text
    assert "--all --kernels fixtures/kernels.toml" in text  # the privileged runner: same list
