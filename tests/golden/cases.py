"""The recorded outputs that a refactor must not move (issue 10: byte-for-byte).

Every case is one CLI call (through typer's CliRunner, as a user types it) or one bench script;
`record.py` writes each case's stdout and exit code under `recorded/`, and `test_golden.py`
checks the current code prints exactly that. Re-record only for a change that is meant to move
an answer, and say so in the commit.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORDED = Path(__file__).parent / "recorded"
PROFILES = sorted((ROOT / "profiles").glob("*.yaml")) + sorted(
    (ROOT / "bench" / "gpu" / "profiles").glob("*.yaml")
)
SHIPPED_PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))
K8S_MODES = ("gpu-pod", "hami", "time-slicing", "mps", "mig")  # every `export k8s --mode` (issue 15)
# MIG plans in mig mode: the shipped MIG examples, profiles planned with --mig auto, existing devices
K8S_MIG_CASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("mig-lab", "examples/mig-lab.yaml", ()),
    ("mig-pinned", "examples/mig-pinned.yaml", ()),
    ("classic-H200-mig-auto", "profiles/classic.yaml", ("--gpus", "H200", "--mig", "auto")),
    ("quantized-2xH100-mig-auto", "profiles/quantized.yaml", ("--gpus", "2xH100", "--mig", "auto")),
    (
        "mig-lab-devices",
        "examples/mig-lab.yaml",
        ("--gpus", "tests/fixtures/gpus/nvidia_H200_mig_3g_2g_1g_1g.json"),
    ),
]
FIXTURE_GPUS = sorted((ROOT / "tests" / "fixtures" / "gpus").glob("*.json"))
CATALOG = ROOT / "gpushare" / "catalog" / "hf_configs"
MODELS = sorted(
    p.stem.replace("--", "/", 1) for p in (ROOT / "tests" / "fixtures" / "hf_configs").glob("*.json")
)
COMPARE_RESULTS = sorted((ROOT / "bench" / "gpu" / "results").glob("*/results.jsonl"))

# Settings each fixture config is estimated with: defaults, each forward and inverse mode, and the
# settings that change a term (batching, TP, fp8 KV, eager, another GPU, another vLLM version).
ESTIMATE_VARIANTS: dict[str, list[str]] = {
    "h100-default": ["--gpu", "H100"],
    "h200-8k": ["--gpu", "H200", "--max-model-len", "8192"],
    "a100-util": ["--gpu", "A100-80GB", "--max-model-len", "8192", "--gpu-memory-utilization", "0.5"],
    "l4-kvfixed": ["--gpu", "L4", "--max-model-len", "4096", "--kv-cache-memory-bytes", "2GiB"],
    "h100-concurrency": ["--gpu", "H100", "--max-model-len", "8192", "--concurrency", "4"],
    "h100-kvtokens": ["--gpu", "H100", "--max-model-len", "4096", "--kv-tokens", "100000"],
    "h100-tp2-fp8kv": ["--gpu", "H100", "--max-model-len", "8192", "--tp", "2", "--kv-cache-dtype", "fp8"],
    "h200-eager-batch": [
        "--gpu",
        "H200",
        "--max-model-len",
        "8192",
        "--enforce-eager",
        "--max-num-seqs",
        "64",
        "--max-num-batched-tokens",
        "2048",
    ],
    "h100-v0.33": ["--gpu", "H100", "--max-model-len", "8192", "--vllm-version", "0.33.0"],
    "h100-fp8": ["--gpu", "H100", "--max-model-len", "8192", "--quantization", "fp8"],
    "h100-pooling": ["--gpu", "H100", "--max-model-len", "8192", "--runner", "pooling"],
}
MIG_AUTO_GPUS = ["H200", "2xH100", "A100-80GB,L4"]
PLAN_GPUS = ["", "H100", "H200", "2xH100", "A100-80GB,L4", "4xL40S", *[str(p) for p in FIXTURE_GPUS]]


@dataclass(frozen=True)
class Case:
    case_id: str
    args: tuple[str, ...]
    kind: str = "cli"  # cli: gpushare ARGS; script: python ARGS (run from the repo root)

    @property
    def path(self) -> Path:
        return RECORDED / f"{self.case_id}.txt"


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-._" else "-" for c in text)
    return keep if len(keep) < 80 else keep[:60] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]


def cases() -> Iterator[Case]:
    for model in MODELS:
        for variant, args in ESTIMATE_VARIANTS.items():
            yield Case(f"estimate-{_slug(model)}-{variant}", ("estimate", model, *args, "--json"))
        yield Case(
            f"estimate-{_slug(model)}-text", ("estimate", model, "--gpu", "H100", "--max-model-len", "8192")
        )
    for profile in PROFILES:
        rel = str(profile.relative_to(ROOT))
        auto = "\ngpus: auto" in profile.read_text()  # NVML's GPUs: not the same on every machine
        for gpus in PLAN_GPUS[1:] if auto else PLAN_GPUS:
            gpu_args = ("--gpus", gpus) if gpus else ()
            gpu_id = _slug(Path(gpus).stem if gpus.endswith(".json") else gpus or "own")
            stem = f"{profile.parent.name}-{profile.stem}"
            yield Case(f"plan-{stem}-{gpu_id}-json", ("plan", rel, *gpu_args, "--json"))
            yield Case(f"plan-{stem}-{gpu_id}-text", ("plan", rel, *gpu_args))
            yield Case(f"check-{stem}-{gpu_id}", ("check", rel, *gpu_args))
        yield Case(
            f"plan-{profile.parent.name}-{profile.stem}-spread-json",
            ("plan", rel, "--gpus", "4xH100", "--strategy", "spread", "--json"),
        )
        if profile.parent == ROOT / "profiles":
            # MIG: a geometry chosen per GPU (the MIG-enabled fixture covers existing devices)
            for gpus in MIG_AUTO_GPUS:
                yield Case(
                    f"plan-{profile.stem}-{_slug(gpus)}-mig-auto-text",
                    ("plan", rel, "--gpus", gpus, "--mig", "auto"),
                )
                yield Case(
                    f"plan-{profile.stem}-{_slug(gpus)}-mig-auto-json",
                    ("plan", rel, "--gpus", gpus, "--mig", "auto", "--json"),
                )
    for profile in SHIPPED_PROFILES:
        rel = str(profile.relative_to(ROOT))
        for mode in K8S_MODES:
            yield Case(
                f"export-k8s-{profile.stem}-{mode}", ("export", "k8s", rel, "--mode", mode, "--out", "-")
            )
            yield Case(f"check-k8s-{profile.stem}-{mode}", ("check", rel, "--target", "k8s", "--mode", mode))
    for case_id, rel, args in K8S_MIG_CASES:
        yield Case(f"export-k8s-{case_id}-mig", ("export", "k8s", rel, *args, "--mode", "mig", "--out", "-"))
        yield Case(f"check-k8s-{case_id}-mig", ("check", rel, *args, "--target", "k8s", "--mode", "mig"))
    # a MIG plan in another mode: refused, naming --mode mig
    yield Case("check-k8s-mig-lab-gpu-pod", ("check", "examples/mig-lab.yaml", "--target", "k8s"))
    for results in COMPARE_RESULTS:
        yield Case(
            f"compare-{results.parent.name}",
            ("bench/gpu/compare.py", str(results.relative_to(ROOT))),
            kind="script",
        )


BENCH_MODELS = Path("/tmp/models")  # where bench/gpu/profiles expect their dummy model folders


def bench_model_folders() -> None:
    """The folders bench/gpu/profiles name (`model: /tmp/models/X  # repo/id`), as run_heldout.sh
    writes them: the catalog's config.json (no weights, no headers, so weights come from the config)."""
    for profile in (ROOT / "bench" / "gpu" / "profiles").glob("*.yaml"):
        for line in profile.read_text().splitlines():
            words = line.split()
            if len(words) >= 4 and words[0] == "model:" and words[1].startswith(f"{BENCH_MODELS}/"):
                folder, repo_id = Path(words[1]), words[3]
                config = (CATALOG / (repo_id.replace("/", "--") + ".json")).read_text()
                target = folder / "config.json"
                if target.exists() and target.read_text() != config:
                    raise RuntimeError(f"{target} is not the catalog's {repo_id} config; move it away")
                folder.mkdir(parents=True, exist_ok=True)
                target.write_text(config)


def run_case(case: Case) -> str:
    """The case's output as recorded: exit code on the first line, then stdout."""
    if case.kind == "script":
        done = subprocess.run(
            [sys.executable, *case.args], cwd=ROOT, capture_output=True, text=True, check=False
        )
        return f"exit {done.returncode}\n{done.stdout}--- stderr\n{done.stderr}"
    from typer.testing import CliRunner

    from gpushare.cli import app

    env = {
        "COLUMNS": "200",
        "HF_HUB_OFFLINE": "1",
        "GPUSHARE_CALIBRATION_FILE": str(RECORDED / "no-calibration"),
    }
    result = CliRunner().invoke(app, list(case.args), env=env)
    return f"exit {result.exit_code}\n{result.stdout}--- stderr\n{result.stderr}"
