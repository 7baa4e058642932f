"""Checks of the deployment examples under examples/: `.venv/bin/python -m pytest scripts/tests`.

The GitHub workflows themselves are checked by scripts/test.sh (actionlint and
check-jsonschema); this makes sure every workflow is named so that it finds it, and checks the
Kubernetes manifest against the Kubernetes API schemas bundled in kubernetes-validate (offline).
"""
import glob
import os

import kubernetes_validate
import yaml

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
EXAMPLES = os.path.join(ROOT, "examples")
K8S = os.path.join(EXAMPLES, "distributed", "kubernetes-indexed-job.yaml")
# The oldest Kubernetes with backoffLimitPerIndex on by default, and the newest schemas shipped.
K8S_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


def yaml_files():
    for ext in ("yml", "yaml"):
        yield from glob.glob(os.path.join(EXAMPLES, "**", f"*.{ext}"), recursive=True)


def is_github_workflow(doc):
    # PyYAML reads the key `on` as True (YAML 1.1).
    return isinstance(doc, dict) and "jobs" in doc and ("on" in doc or True in doc)


def test_every_github_workflow_is_named_for_the_check():
    workflows = []
    for path in yaml_files():
        with open(path, encoding="utf-8") as f:
            docs = list(yaml.safe_load_all(f))
        if any(is_github_workflow(d) for d in docs):
            workflows.append(path)
            assert os.path.basename(path).startswith("github-"), (
                f"{path} is a GitHub workflow: name it github-*.yml so scripts/test.sh lints it"
            )
    assert workflows, "no GitHub workflow found under examples/"


def k8s_resources():
    with open(K8S, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifest_matches_the_api_schema(version):
    for resource in k8s_resources():
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_schema_check_catches_a_misspelt_field():
    work = k8s_resources()[0]
    work["spec"]["completionMod"] = work["spec"].pop("completionMode")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(work, K8S_VERSIONS[-1], strict=True)


def test_kubernetes_work_job_is_an_indexed_job_of_one_pod_per_shard():
    work, gather = k8s_resources()
    spec = work["spec"]
    assert (work["kind"], work["metadata"]["labels"]["improve-step"]) == ("Job", "work")
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] <= spec["completions"]
    assert spec["backoffLimitPerIndex"] >= 1
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    script = container["args"][0]
    assert "improve work --plan /plan/plan.json" in script and "--push origin" in script
    assert "--shard" not in script, "the shard comes from JOB_COMPLETION_INDEX"
    env = {e["name"]: e for e in container["env"]}
    assert env["IMPROVE_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "improve-llm", "key": "api-key"}
    assert env["GIT_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "improve-git"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert volumes["plan"]["configMap"]["name"] == "improve-plan" and mounts["plan"] == "/plan"
    # Exit codes of improve: 1 and 2 are not worth a retry, the rest is.
    rules = spec["podFailurePolicy"]["rules"]
    fail_index = [r for r in rules if r["action"] == "FailIndex"]
    assert fail_index[0]["onExitCodes"]["values"] == [1, 2]
    assert fail_index[0]["onExitCodes"]["containerName"] == container["name"]

    assert gather["metadata"]["labels"]["improve-step"] == "gather"
    assert "improve gather --plan /plan/plan.json --from origin --push origin" in (
        gather["spec"]["template"]["spec"]["containers"][0]["args"][0]
    )
