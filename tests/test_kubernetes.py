"""deploy/kubernetes/: schema-valid (kubernetes-validate ships the API schemas: no cluster needed),
consistent with the image and the CLI, and described by the README as it is."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from engine.cli import build_parser
from engine.config import load_settings
from engine.shard import parse_shard

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
# backoffLimitPerIndex is beta (on by default) from 1.29 and GA in 1.33; podFailurePolicy GA in 1.31
VERSIONS = ["1.29.0", "1.31.0", "1.33.0", kubernetes_validate.latest_version()]


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / name).read_text())


def manifests() -> list[str]:
    return sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    return load("job.yaml")


@pytest.fixture(scope="module")
def container(job) -> dict[str, Any]:
    (c,) = job["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", manifests())
def test_manifest_validates_strictly(name: str, version: str) -> None:
    kubernetes_validate.validate(load(name), version, strict=True)  # raises ValidationError


def test_the_validator_can_fail(job) -> None:
    broken = yaml.safe_load(yaml.safe_dump(job))
    broken["spec"]["podFailurePolicy"]["rules"][0]["action"] = "Retry"
    broken["spec"]["backoffLimitPerIndex"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    k = load("kustomization.yaml")
    assert sorted(k["resources"]) == [m for m in manifests() if m != "secret.example.yaml"]


def test_indexed_job_shards_by_completion_index(job, container) -> None:
    spec = job["spec"]
    args = container["args"]
    shard = next(a.split("=", 1)[1] for a in args if a.startswith("--shard="))
    index, count = shard.split("/")
    assert spec["completionMode"] == "Indexed" and index == "$(JOB_COMPLETION_INDEX)"
    assert spec["completions"] == spec["parallelism"] == int(count)
    env = {e["name"]: e for e in container["env"]}
    # $(VAR) in args expands only variables the container declares
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    for i in range(int(count)):  # what each pod runs parses with the real CLI
        argv = [a.replace("$(JOB_COMPLETION_INDEX)", str(i)) for a in args]
        parsed = build_parser().parse_args(argv)
        assert parsed.command == "run" and parsed.shard == parse_shard(f"{i}/{count}")
        assert str(parsed.out) == "/out" and parsed.json_logs is True


def test_failure_policy_fails_the_job_on_2_and_3_and_retries_the_index_otherwise(job, container) -> None:
    spec = job["spec"]
    assert spec["backoffLimitPerIndex"] >= 1 and "backoffLimit" not in spec
    rules = spec["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob"]
    assert len(fail) == 1 and fail[0]["onExitCodes"] == {"containerName": container["name"], "operator": "In", "values": [2, 3]}
    assert {r["action"] for r in rules} <= {"FailJob", "Ignore"}  # everything else: Count, i.e. retry the index
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # required by podFailurePolicy


def test_pod_matches_the_image(job, container) -> None:
    pod = job["spec"]["template"]["spec"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid, gid = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M).groups()
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(uid), int(gid))
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert pod["terminationGracePeriodSeconds"] >= 30
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "persistentVolumeClaim" in volumes[mounts["/out"]] and "emptyDir" in volumes[mounts["/tmp"]]
    assert volumes[mounts["/out"]]["persistentVolumeClaim"]["claimName"] == load("pvc.yaml")["metadata"]["name"]
    resources = container["resources"]
    assert "cpu" not in resources.get("limits", {}) and resources["limits"]["memory"]


def test_config_and_secret_file_fit_the_pod(job, container, tmp_path: Path, monkeypatch) -> None:
    pod = job["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_arg = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--config="))
    cm = load("configmap.yaml")
    config_volume = next(n for n, v in volumes.items() if v.get("configMap", {}).get("name") == cm["metadata"]["name"])
    key = Path(config_arg).relative_to(mounts[config_volume]).as_posix()
    toml = cm["data"][key]
    assert tomllib.loads(toml)["export"]["out_dir"] == "/out"

    secret = load("secret.example.yaml")
    secret_volume = next(n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == secret["metadata"]["name"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    secret_file = Path(env["AEP_EXPORT_AUTH__CLIENT_SECRET_FILE"])
    assert secret_file.parent == Path(mounts[secret_volume]) and secret_file.name in secret["stringData"]

    # the ConfigMap's config is a valid configuration for this engine (the secret given inline here)
    (tmp_path / key).write_text(toml)
    for k in [k for k in __import__("os").environ if k.startswith("AEP_EXPORT_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("AEP_EXPORT_AUTH__CLIENT_SECRET", "from-the-secret-file")
    settings = load_settings(tmp_path / key)
    assert settings.datasets and settings.export.out_dir == Path("/out")


def test_readme_kubernetes_section_matches_the_manifests(job, container) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run on Kubernetes", 1)[1].split("\n## ", 1)[0]
    for name in [*manifests(), "kustomization.yaml"]:
        assert f"deploy/kubernetes/{name}" in section or name in section, name
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert blocks, "the section shows the Job's essentials as YAML"
    shown = yaml.safe_load(blocks[0])
    assert_subset(shown, job)
    assert "--shard=$(JOB_COMPLETION_INDEX)/4" in section


def assert_subset(shown: Any, actual: Any, where: str = "job") -> None:
    """Every value the README shows is the manifest's (lists: the same items, in order)."""
    if isinstance(shown, dict):
        assert isinstance(actual, dict), where
        for k, v in shown.items():
            assert k in actual, f"{where}.{k} is in the README but not in job.yaml"
            assert_subset(v, actual[k], f"{where}.{k}")
    elif isinstance(shown, list):
        assert isinstance(actual, list) and len(shown) == len(actual), where
        for i, (s, a) in enumerate(zip(shown, actual, strict=False)):
            assert_subset(s, a, f"{where}[{i}]")
    else:
        assert shown == actual, f"{where}: README says {shown!r}, job.yaml {actual!r}"
