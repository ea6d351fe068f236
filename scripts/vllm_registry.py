"""Write gpushare's copy of one vLLM release's model registry from that release's source.

    python scripts/vllm_registry.py /path/to/vllm-src/vllm > gpushare/catalog/vllm_registry/0.26.0.json

Reads `model_executor/models/registry.py` and `_version.py` of an unpacked vLLM (a wheel's
`vllm/` folder is enough: `pip download --no-deps --only-binary=:all: vllm==X` then unzip), runs
only the assignments of its registry dicts (plain literals and one comprehension over an earlier
dict) and prints, for every architecture name, the dict it is in and the (module, class) it maps
to, plus `_PREVIOUSLY_SUPPORTED_MODELS` (name → last release that served it) and
`_OOT_SUPPORTED_MODELS` (name → plugin). gpushare reads the result in
gpushare/architectures.py to say which releases serve an architecture it does not size.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

# registry.py's dicts, in the order `_VLLM_MODELS` merges them (later ones win for a name in two).
CATEGORIES = {
    "_TEXT_GENERATION_MODELS": "text_generation",
    "_EMBEDDING_MODELS": "embedding",
    "_LATE_INTERACTION_MODELS": "late_interaction",
    "_REWARD_MODELS": "reward",
    "_TOKEN_CLASSIFICATION_MODELS": "token_classification",
    "_SEQUENCE_CLASSIFICATION_MODELS": "sequence_classification",
    "_MULTIMODAL_MODELS": "multimodal",
    "_SPECULATIVE_DECODING_MODELS": "speculative_decoding",
    "_TRANSFORMERS_SUPPORTED_MODELS": "transformers_supported",
    "_TRANSFORMERS_BACKEND_MODELS": "transformers_backend",
}
OTHER = ("_PREVIOUSLY_SUPPORTED_MODELS", "_OOT_SUPPORTED_MODELS")


def registry_dicts(source: str) -> dict[str, dict[str, object]]:
    """The registry's module-level dict assignments, evaluated with no builtins."""
    wanted = set(CATEGORIES) | set(OTHER)
    namespace: dict[str, object] = {"__builtins__": {}}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in wanted:
                exec(compile(ast.Module([node], []), "registry.py", "exec"), namespace)  # noqa: S102
    missing = wanted - set(namespace)
    if missing:
        raise SystemExit(f"registry.py has no {', '.join(sorted(missing))}")
    return {name: namespace[name] for name in wanted}  # type: ignore[misc]


def main(root: str) -> None:
    vllm = Path(root)
    version = re.search(r"__version__ = version = '([^']+)'", (vllm / "_version.py").read_text())
    commit = re.search(r"commit_id = '([^']+)'", (vllm / "_version.py").read_text())
    dicts = registry_dicts((vllm / "model_executor" / "models" / "registry.py").read_text())
    out = {
        "vllm_version": version.group(1) if version else "unknown",
        "source": f"vllm/model_executor/models/registry.py (commit {commit.group(1) if commit else '?'})",
        "categories": {
            label: {arch: list(entry) for arch, entry in dicts[name].items()}  # type: ignore[union-attr]
            for name, label in CATEGORIES.items()
        },
        "previously_supported": dicts["_PREVIOUSLY_SUPPORTED_MODELS"],
        "out_of_tree": dicts["_OOT_SUPPORTED_MODELS"],
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "vllm")
