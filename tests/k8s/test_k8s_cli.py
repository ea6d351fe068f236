"""`gpushare export k8s` and `gpushare check --target k8s --mode M` through the CLI: exit codes,
the directory and the stream, the same plan as `gpushare plan` (--gpus), and user mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gpushare.cli import app

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "profiles"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("GPUSHARE_CALIBRATION_FILE", str(tmp_path / "no-calibration"))


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("case", "profile", "mode", "code", "fragment"),
    [
        ("classic-gpu-pod", "classic", "gpu-pod", 0, "ok: k8s --mode gpu-pod holds the plan"),
        ("classic-hami", "classic", "hami", 0, "gpumem 26912 MiB per GPU"),
        ("classic-time-slicing", "classic", "time-slicing", 0, "with 3 replicas"),
        ("classic-mps", "classic", "mps", 1, "'llama-3.1-8b' plans 28.17 GiB, 1.51 GiB over"),
        ("quantized-mps", "quantized", "mps", 1, "limits each instance to 22.49 GiB"),
        ("workstation-ts", "workstation", "time-slicing", 1, "it spans 2 GPUs (tensor parallel)"),
        ("workstation-gpu-pod", "workstation", "gpu-pod", 0, "pod gpu0-1 (nvidia.com/gpu 2"),
    ],
)
def test_check_target_k8s(case: str, profile: str, mode: str, code: int, fragment: str) -> None:
    exit_code, out, _ = run("check", str(PROFILES / f"{profile}.yaml"), "--target", "k8s", "--mode", mode)
    assert exit_code == code, out
    assert fragment in out
    assert out.startswith(f"ok: {profile}:")  # the host check is the same as ever
    if code:
        assert "use --mode gpu-pod" in out


def test_check_target_k8s_json_and_github() -> None:
    path = str(PROFILES / "classic.yaml")
    code, out, _ = run("check", path, "--target", "k8s", "--mode", "mps", "--format", "json")
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False and data["k8s"]["mode"] == "mps" and data["k8s"]["ok"] is False
    assert "26.67 GiB" in data["k8s"]["problem"] and data["feasible"] is True
    code, out, _ = run("check", path, "--target", "k8s", "--format", "json")
    assert code == 0 and json.loads(out)["k8s"]["ok"] is True
    code, out, _ = run("check", path, "--target", "k8s", "--mode", "mps", "--format", "github")
    assert code == 1 and f"::error file={path}::k8s --mode mps: MPS with 3 replicas" in out


def test_a_plan_that_does_not_fit_is_not_a_k8s_question() -> None:
    code, out, _ = run("check", str(PROFILES / "classic.yaml"), "--gpus", "L4", "--target", "k8s")
    assert code == 1
    assert "k8s" not in out  # the plan's own failure is the answer


@pytest.mark.parametrize("mode", ["gpu-pod", "hami", "time-slicing", "mps"])
def test_a_plan_on_mig_slices_is_refused_by_every_mode(mode: str) -> None:
    """No mode writes MIG resources yet; whole-GPU pods would be another plan than `gpushare plan`'s."""
    path = str(ROOT / "examples" / "mig-lab.yaml")
    code, out, err = run("export", "k8s", path, "--mode", mode, "--out", "-")
    assert code == 2 and "the plan runs on MIG slices, and export k8s has no mig mode yet" in out + err
    code, out, _ = run("check", path, "--target", "k8s", "--mode", mode)
    assert code == 2 and f"k8s --mode {mode}: lab: the plan runs on MIG slices" in out


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("mode-without-target", ["check", "{p}", "--mode", "hami"], "--mode is for --target k8s"),
        ("bad-mode", ["check", "{p}", "--target", "k8s", "--mode", "mig2"], "--mode 'mig2': choose one of"),
        ("export-bad-mode", ["export", "k8s", "{p}", "--mode", "slices"], "choose one of gpu-pod, hami"),
        ("bad-cache", ["export", "k8s", "{p}", "--hf-cache", "nfs:/x"], "--hf-cache 'nfs:/x'"),
        ("bad-label", ["export", "k8s", "{p}", "--prometheus-label", "release"], "expected KEY=VALUE"),
        ("bad-namespace", ["export", "k8s", "{p}", "--namespace", "LLM"], "not a valid Kubernetes namespace"),
        ("replicas-gpu-pod", ["export", "k8s", "{p}", "--replicas", "3"], "--replicas is for --mode"),
    ],
)
def test_mistakes_exit_2(case: str, args: list[str], message: str) -> None:
    code, out, err = run(*(a.replace("{p}", str(PROFILES / "classic.yaml")) for a in args))
    assert code == 2, out + err
    assert message in out + err


def test_export_writes_a_directory_and_replaces_only_an_earlier_export(tmp_path: Path) -> None:
    out_dir = tmp_path / "k8s"
    code, _, err = run(
        "export", "k8s", str(PROFILES / "classic.yaml"), "--mode", "time-slicing", "--out", str(out_dir)
    )
    assert code == 0, err
    assert f"wrote 18 files to {out_dir}/ (time-slicing)" in err
    kustomization = yaml.safe_load((out_dir / "kustomization.yaml").read_text())
    assert all((out_dir / name).is_file() for name in kustomization["resources"])
    assert (out_dir / "cluster" / "kustomization.yaml").is_file()
    # again in another mode: the time-slicing files are gone, the gpu-pod ones there
    code, _, err = run("export", "k8s", str(PROFILES / "classic.yaml"), "--out", str(out_dir))
    assert code == 0, err
    assert not (out_dir / "cluster").exists()
    assert not (out_dir / "deployment-classic-qwen2-5-7b.yaml").exists()
    assert (out_dir / "deployment-classic-gpu0.yaml").is_file()
    # a directory that holds something else is not touched
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, out, err = run("export", "k8s", str(PROFILES / "classic.yaml"), "--out", str(other))
    assert code == 2 and "holds no earlier export" in out + err
    assert (other / "notes.txt").read_text() == "mine"


def test_export_to_stdout_uses_the_gpus_option() -> None:
    code, out, err = run("export", "k8s", str(PROFILES / "classic.yaml"), "--gpus", "H100", "--out", "-")
    assert code == 0, err
    documents = list(yaml.safe_load_all(out))
    pod = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "classic-gpu0")
    assert (
        pod["spec"]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    )
    plan_map = next(d for d in documents if d["metadata"]["name"] == "classic-gpu0-plan")
    sub = json.loads(plan_map["data"]["plan.json"])
    code, planned, _ = run("plan", str(PROFILES / "classic.yaml"), "--gpus", "H100", "--json")
    whole = json.loads(planned)
    # the same numbers as `gpushare plan` (the pod's only change is the address vLLM listens on)
    assert [i["planned_bytes"] for i in sub["instances"]] == [i["planned_bytes"] for i in whole["instances"]]
    assert [i["argv"] for i in sub["instances"]] == [
        [a if a != "127.0.0.1" else "0.0.0.0" for a in i["argv"]] for i in whole["instances"]
    ]


def test_export_refusal_writes_nothing(tmp_path: Path) -> None:
    code, out, err = run(
        "export", "k8s", str(PROFILES / "classic.yaml"), "--mode", "mps", "--out", str(tmp_path / "x")
    )
    assert code == 1
    assert "MPS with 3 replicas" in out + err
    assert not (tmp_path / "x").exists()
