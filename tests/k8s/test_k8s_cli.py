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
def test_a_plan_on_mig_slices_is_refused_outside_mig_mode(mode: str) -> None:
    """A whole GPU, a HAMi share or a replica is another device than the slice each instance was
    sized for: exit 1 (the mode cannot hold the plan), naming the slices and --mode mig."""
    path = str(ROOT / "examples" / "mig-lab.yaml")
    code, out, err = run("export", "k8s", path, "--mode", mode, "--out", "-")
    assert code == 1 and out == ""
    message = " ".join((out + err).split())
    assert f"{mode}: the plan runs instances on MIG slices (chat on GPU 0's 3g.71gb@4, small on" in message
    assert "use --mode mig" in message
    code, out, _ = run("check", path, "--target", "k8s", "--mode", mode)
    assert code == 1 and f"k8s --mode {mode}: {mode}: the plan runs instances on MIG slices" in out


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("mode-without-target", ["check", "{p}", "--mode", "hami"], "--mode is for --target k8s"),
        ("bad-mode", ["check", "{p}", "--target", "k8s", "--mode", "mig2"], "--mode 'mig2': choose one of"),
        ("export-bad-mode", ["export", "k8s", "{p}", "--mode", "slices"], "choose one of gpu-pod, mig, hami"),
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


EXAMPLES = ROOT / "examples"


@pytest.mark.parametrize(
    ("case", "args", "code", "fragment"),
    [
        (
            "lab-check",
            ["check", str(EXAMPLES / "mig-lab.yaml"), "--target", "k8s", "--mode", "mig"],
            0,
            "ok: k8s --mode mig holds the plan",
        ),
        (
            "auto-check",
            ["check", str(PROFILES / "classic.yaml"), "--gpus", "H200", "--mig", "auto"]
            + ["--target", "k8s", "--mode", "mig"],
            0,
            "llama-3.1-8b: nvidia.com/mig-3g.71gb 1 (NVIDIA-H200-MIG-3g.71gb",
        ),
        (
            "whole-gpus-check",
            ["check", str(PROFILES / "classic.yaml"), "--target", "k8s", "--mode", "mig"],
            1,
            "k8s --mode mig: mig: the plan for 'classic' puts no instance on a MIG slice (it runs on whole "
            "GPUs); plan it on slices: --mig auto, or mig: on the profile's GPU",
        ),
        (
            "pinned-export",
            ["export", "k8s", str(EXAMPLES / "mig-pinned.yaml"), "--mode", "mig", "--out", "-"],
            1,
            "the plan for 'lab' does not fit: chat: needs 18.32 GiB",
        ),
        (
            "whole-gpus-export",
            ["export", "k8s", str(PROFILES / "quantized.yaml"), "--mode", "mig", "--out", "-"],
            1,
            "mig: the plan for 'quantized' puts no instance on a MIG slice",
        ),
        (
            "on-demand-export",
            ["export", "k8s", str(PROFILES / "on-demand.yaml"), "--mode", "mig", "--out", "-"],
            2,
            "residency on-demand is planned (gpushare plan) but cannot be exported",
        ),
    ],
)
def test_mig_mode_exit_codes(case: str, args: list[str], code: int, fragment: str) -> None:
    exit_code, out, err = run(*args)
    assert exit_code == code, out + err
    assert fragment in " ".join((out + err).split())
    if code and args[0] == "export":
        assert out == ""  # a refusal writes no half export
        assert len(err.strip().splitlines()) <= 2  # one line, and its hint


def test_export_mig_auto_writes_slice_pods_and_the_cluster_part(tmp_path: Path) -> None:
    out_dir = tmp_path / "k8s"
    code, _, err = run(
        "export", "k8s", str(PROFILES / "classic.yaml"), "--gpus", "H200", "--mig", "auto",
        "--mode", "mig", "--out", str(out_dir),
    )  # fmt: skip
    assert code == 0, err
    assert "wrote 19 files" in err and "(mig)" in err
    cluster = yaml.safe_load((out_dir / "cluster" / "kustomization.yaml").read_text())
    assert sorted(cluster["resources"]) == [
        "configmap-gpushare-device-plugin-config.yaml",
        "configmap-gpushare-mig-parted-config.yaml",
    ]
    pod = yaml.safe_load((out_dir / "deployment-classic-llama-3-1-8b.yaml").read_text())
    limits = pod["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/mig-3g.71gb": "1"}


def test_export_of_a_saved_plan_is_the_export_of_its_profile(tmp_path: Path) -> None:
    lab = str(EXAMPLES / "mig-lab.yaml")
    code, planned, _ = run("plan", lab, "--json")
    assert code == 0
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(planned)
    code, from_file, err = run("export", "k8s", "--plan-file", str(plan_file), "--mode", "mig", "--out", "-")
    assert code == 0, err
    code, from_profile, _ = run("export", "k8s", lab, "--mode", "mig", "--out", "-")
    assert code == 0 and from_file == from_profile
    assert "nvidia.com/mig-3g.71gb" in from_file


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("neither", ["export", "k8s", "--mode", "mig"], "give a profile YAML or --plan-file FILE"),
        (
            "both",
            ["export", "k8s", "{lab}", "--plan-file", "{plan}"],
            "give a profile YAML or --plan-file FILE",
        ),
        (
            "gpus-with-plan-file",
            ["export", "k8s", "--plan-file", "{plan}", "--gpus", "H200"],
            "--gpus, --mig and --no-calibration choose how PROFILE is planned",
        ),
        ("not-a-plan", ["export", "k8s", "--plan-file", "{lab}"], "--plan-file"),
    ],
)
def test_plan_file_mistakes_exit_2(tmp_path: Path, case: str, args: list[str], message: str) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(run("plan", str(EXAMPLES / "mig-lab.yaml"), "--json")[1])
    code, out, err = run(
        *(a.replace("{lab}", str(EXAMPLES / "mig-lab.yaml")).replace("{plan}", str(plan_file)) for a in args)
    )
    assert code == 2, out + err
    assert message in " ".join((out + err).split())
