"""The architectures gpushare sizes, one row each: the one table every other module asks.

A config.json names its model class in `architectures` (vLLM's registry key,
vllm/model_executor/models/registry.py). gpushare sizes a model only when that name is a row
here: the row says which vLLM class serves it, which runner `--runner auto` gives it, the layout
gpushare computes its memory with, and which vLLM releases serve it. Anything else is refused
(`ArchitectureError`, exit 2) with what is known: whether the vLLM release being planned for
serves it (from that release's registry, gpushare/catalog/vllm_registry/), the last release
that did, and what to do. The README's list of supported architectures is written from this
table (`gpushare models --architectures --markdown`; tests/docs checks the README's copy).

Adding a row: append an `Architecture(...)` to ROWS below (keep the section order), with
  name         the config.json `architectures[0]` value, exactly as vLLM's registry spells it;
  vllm_class   "module.Class" of vLLM's registry entry for that name (vLLM 0.26.0);
  model_types  the config.json `model_type` values published configs use with it (hfconfig's
               per-model_type defaults are keyed by these);
  runner       what vLLM's `--runner auto` resolves the class to: "generate" or "pooling";
  tasks        for pooling classes, the `--convert` task they serve natively ("embed" or
               "classify"); generate classes can be served as embedders/classifiers with
               `--runner pooling --convert embed|classify` (vLLM's adapters), so they list none;
  layout       how gpushare sizes it (`Layout`; what each means is in LAYOUTS);
  served       the vLLM releases that serve it (`Served`);
  successors   for a row vLLM dropped, the architectures to use instead;
  detail       one line on what is particular about its memory, with the vLLM file it follows.
Then add a test against an exact copy of a published config (tests/core/test_architectures.py),
and run `scripts/refresh-docs` to rewrite the README's list.

Pure data and lookups; reads only the bundled registry JSON (lazily, for refusals).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from gpushare.errors import ArchitectureError, InputError
from gpushare.versions import parse_version

Runner = Literal["generate", "pooling"]
"""vLLM's `--runner`: a text generator, or a pooling model (embeddings, classification scores)."""
PoolingTask = Literal["embed", "classify"]
"""vLLM's `--convert` for a pooling model: `embed` (/v1/embeddings) or `classify` (/classify,
/score and /rerank for cross-encoders). vLLM 0.26.0 has no `--task` flag any more (tasks.py)."""
TaskName = Literal["embed", "classify", "score", "rerank"]
"""What a profile or `estimate --task` may name: `score` and `rerank` are what vLLM serves a
`classify` (cross-encoder) model at (/score, /rerank; tasks.py: "`score` task was removed; use
`classify` instead"), so they mean `--convert classify`."""
TASK_NAMES: tuple[TaskName, ...] = ("embed", "classify", "score", "rerank")
RUNNER_CHOICES = ("auto", "generate", "pooling")
Layout = Literal["decoder", "encoder", "multimodal", "mxfp4-moe"]
"""How gpushare sizes an architecture."""

LAYOUTS: dict[str, str] = {
    "decoder": "token embedding, attention (GQA/MQA/MHA or MLA) and an MLP (dense or MoE) "
    "per layer, KV cache per layer (full or sliding window)",
    "encoder": "encoder-only (BERT/RoBERTa): word, position and token-type embeddings, "
    "bidirectional attention with no KV cache, no profile run",
    "multimodal": "a decoder plus a vision tower and projector (memory/vision.py), built unless every "
    "modality the tower serves is off (`modalities: off`); the encoder's serve-time activations noted",
    "mxfp4-moe": "gpt-oss: MXFP4 experts in the layout of the MoE backend vLLM picks for the GPU "
    "(memory/mxfp4.py), bf16 attention with sinks, alternating 128-token sliding windows",
}

# The release whose registry the table was checked against, line by line
# (gpushare/catalog/vllm_registry/0.26.0.json, from scripts/vllm_registry.py).
CHECKED_RELEASE = "0.26.0"
REGISTRY_DIR = Path(__file__).parent / "catalog" / "vllm_registry"


@dataclass(frozen=True)
class Served:
    """The vLLM releases that serve an architecture.

    `since`: the first release that does; None where not checked (the row is taken as served by
    every earlier release gpushare models). `until`: the last release that does (vLLM's
    `_PREVIOUSLY_SUPPORTED_MODELS`); None while the newest checked release serves it (later
    releases are taken to serve it too until a registry says otherwise)."""

    since: str | None = None
    until: str | None = None

    def serves(self, version: str) -> bool:
        v = parse_version(version)
        if self.since is not None and v < parse_version(self.since):
            return False
        return self.until is None or v <= parse_version(self.until)

    def text(self) -> str:
        if self.until is not None:
            return f"≤ {self.until}" if self.since is None else f"{self.since} – {self.until}"
        return f"≥ {self.since}" if self.since is not None else f"{CHECKED_RELEASE} (checked), later assumed"


@dataclass(frozen=True)
class Architecture:
    """One architecture gpushare sizes (see the module docstring for each field)."""

    name: str
    vllm_class: str
    model_types: tuple[str, ...]
    runner: Runner
    layout: Layout
    served: Served = Served()
    tasks: tuple[PoolingTask, ...] = ()
    successors: tuple[str, ...] = ()
    detail: str = ""

    @property
    def encoder_only(self) -> bool:
        """Bidirectional attention with no KV cache (vLLM's EncoderOnlyAttention)."""
        return self.layout == "encoder"

    def default_task(self) -> PoolingTask:
        """The pooling task vLLM gives it under `--runner pooling` with `--convert auto`
        (config/model.py `_get_default_convert_type`: the class's own, else `embed`)."""
        return self.tasks[0] if self.tasks else "embed"


_NOW = Served()

ROWS: tuple[Architecture, ...] = (
    # --- text generation (decoders) ----------------------------------------------------------
    Architecture(
        "LlamaForCausalLM",
        "llama.LlamaForCausalLM",
        ("llama",),
        "generate",
        "decoder",
        detail="GQA, gated MLP (models/llama.py)",
    ),
    Architecture(
        "MistralForCausalLM",
        "mistral.MistralForCausalLM",
        ("mistral",),
        "generate",
        "decoder",
        detail="Llama layout; a sliding window when the config sets one below max_position_embeddings",
    ),
    Architecture(
        "MixtralForCausalLM",
        "mixtral.MixtralForCausalLM",
        ("mixtral",),
        "generate",
        "decoder",
        detail="MoE MLP (fused experts), V1 model runner (models/mixtral.py, config/vllm.py)",
    ),
    Architecture(
        "Qwen2ForCausalLM",
        "qwen2.Qwen2ForCausalLM",
        ("qwen2",),
        "generate",
        "decoder",
        detail="GQA with QKV bias, gated MLP (models/qwen2.py); Qwen1.5, Qwen2, Qwen2.5",
    ),
    Architecture(
        "Qwen3ForCausalLM",
        "qwen3.Qwen3ForCausalLM",
        ("qwen3",),
        "generate",
        "decoder",
        detail="GQA, explicit head_dim, q/k norms (models/qwen3.py); Qwen3-Embedding is this class "
        "under `--runner pooling` (a Sentence-Transformers folder selects it)",
    ),
    Architecture(
        "Qwen3MoeForCausalLM",
        "qwen3_moe.Qwen3MoeForCausalLM",
        ("qwen3_moe",),
        "generate",
        "decoder",
        detail="MoE MLP, V1 model runner (models/qwen3_moe.py)",
    ),
    Architecture(
        "DeepseekV2ForCausalLM",
        "deepseek_v2.DeepseekV2ForCausalLM",
        ("deepseek_v2",),
        "generate",
        "decoder",
        detail="MLA (one latent KV per token) and MoE with shared experts (models/deepseek_v2.py)",
    ),
    Architecture(
        "Gemma2ForCausalLM",
        "gemma2.Gemma2ForCausalLM",
        ("gemma2",),
        "generate",
        "decoder",
        detail="even layers slide, odd layers attend fully; four norms per layer (models/gemma2.py)",
    ),
    Architecture(
        "Gemma3ForCausalLM",
        "gemma3.Gemma3ForCausalLM",
        ("gemma3_text",),
        "generate",
        "decoder",
        detail="five of every six layers slide (sliding_window_pattern 6); Gemma3TextConfig's defaults "
        "fill what the published file omits (models/gemma3.py)",
    ),
    Architecture(
        "Phi3ForCausalLM",
        "phi3.Phi3ForCausalLM",
        ("phi3",),
        "generate",
        "decoder",
        detail="Llama layout with fused qkv/gate_up; every layer slides when the window is below the "
        "context (models/phi3.py)",
    ),
    Architecture(
        "ChatGLMModel",
        "chatglm.ChatGLMForCausalLM",
        ("chatglm",),
        "generate",
        "decoder",
        detail="multi-query groups as KV heads, QKV bias, padded_vocab_size, seq_length as context "
        "(models/chatglm.py); tokenizer needs --trust-remote-code",
    ),
    Architecture(
        "ChatGLMForConditionalGeneration",
        "chatglm.ChatGLMForCausalLM",
        ("chatglm",),
        "generate",
        "decoder",
        detail="same class as ChatGLMModel (GLM-4-9B-Chat's files name this one)",
    ),
    Architecture(
        "QWenLMHeadModel",
        "qwen.QWenLMHeadModel",
        ("qwen",),
        "generate",
        "decoder",
        served=Served(until="0.23.0"),
        successors=("Qwen2ForCausalLM", "Qwen3ForCausalLM"),
        detail="the first Qwen (Qwen-7B/14B/72B): MHA with QKV bias, MLP width intermediate_size // 2 "
        "(vLLM 0.23.0 models/qwen.py QWenMLP); successors Qwen1.5/Qwen2/Qwen2.5 (Qwen2ForCausalLM) "
        "and Qwen3",
    ),
    # --- pooling (embedders, rerankers) ------------------------------------------------------
    Architecture(
        "XLMRobertaModel",
        "roberta.RobertaEmbeddingModel",
        ("xlm-roberta",),
        "pooling",
        "encoder",
        tasks=("embed",),
        detail="BAAI/bge-m3: CLS pooling; fp32 checkpoints served in fp16 (models/roberta.py)",
    ),
    Architecture(
        "XLMRobertaForSequenceClassification",
        "roberta.RobertaForSequenceClassification",
        ("xlm-roberta",),
        "pooling",
        "encoder",
        tasks=("classify",),
        detail="cross-encoder rerankers (BAAI/bge-reranker-v2-m3): the classifier head in fp32 "
        "(models/roberta.py RobertaClassificationHead)",
    ),
    Architecture(
        "BertModel",
        "bert.BertEmbeddingModel",
        ("bert",),
        "pooling",
        "encoder",
        tasks=("embed",),
        detail="BERT embedders (bge-small/base/large-en-v1.5); the HF pooler is not built (models/bert.py)",
    ),
    # --- multimodal and gpt-oss ----------------------------------------------------------------
    Architecture(
        "Qwen2VLForConditionalGeneration",
        "qwen2_vl.Qwen2VLForConditionalGeneration",
        ("qwen2_vl",),
        "generate",
        "multimodal",
        detail="Qwen2 text model; ViT with LayerNorms, fc1/fc2 MLP (embed_dim × mlp_ratio), patch "
        "merger; M-RoPE (models/qwen2_vl.py)",
    ),
    Architecture(
        "Qwen2_5_VLForConditionalGeneration",
        "qwen2_5_vl.Qwen2_5_VLForConditionalGeneration",
        ("qwen2_5_vl",),
        "generate",
        "multimodal",
        detail="Qwen2 text model; ViT with RMSNorms and a gated MLP, patch merger; M-RoPE "
        "(models/qwen2_5_vl.py)",
    ),
    Architecture(
        "Qwen3VLForConditionalGeneration",
        "qwen3_vl.Qwen3VLForConditionalGeneration",
        ("qwen3_vl",),
        "generate",
        "multimodal",
        detail="Qwen3 text model; ViT with a learned position table, merger and deepstack mergers, "
        "deepstack buffers of max_num_batched_tokens × hidden (models/qwen3_vl.py)",
    ),
    Architecture(
        "Qwen3VLMoeForConditionalGeneration",
        "qwen3_vl_moe.Qwen3VLMoeForConditionalGeneration",
        ("qwen3_vl_moe",),
        "generate",
        "multimodal",
        detail="Qwen3-MoE text model on the V1 runner, whose profile runs the vision encoder on dummy "
        "images (models/qwen3_vl_moe.py, v1/worker/gpu_model_runner.py)",
    ),
    Architecture(
        "Gemma3ForConditionalGeneration",
        "gemma3_mm.Gemma3ForConditionalGeneration",
        ("gemma3",),
        "generate",
        "multimodal",
        detail="Gemma-3 text model; SigLIP tower with its post-norm and an unsharded projection "
        "matrix (models/gemma3_mm.py, siglip.py)",
    ),
    Architecture(
        "LlavaForConditionalGeneration",
        "llava.LlavaForConditionalGeneration",
        ("llava",),
        "generate",
        "multimodal",
        detail="a Llama-family text model; CLIP tower built up to vision_feature_layer, no post-norm, "
        "two-layer projector (models/llava.py, clip.py)",
    ),
    Architecture(
        "GptOssForCausalLM",
        "gpt_oss.GptOssForCausalLM",
        ("gpt_oss",),
        "generate",
        "mxfp4-moe",
        detail="MXFP4 experts (TRITON on Hopper/Blackwell, Marlin on Ampere/Ada), attention sinks, even "
        "layers slide over 128 tokens, fp32 yarn rope cache, V1 runner, CUDA graphs up to 1024 "
        "(models/gpt_oss.py, fused_moe/oracle/mxfp4.py)",
    ),
)

TABLE: dict[str, Architecture] = {row.name: row for row in ROWS}


# ---------------------------------------------------------------------------------------------
# What a vLLM release's registry says of names gpushare does not size


@dataclass(frozen=True)
class RegistryEntry:
    """What one release's registry says of one architecture name."""

    release: str
    category: str | None  # text_generation, embedding, multimodal, ...; None when absent
    vllm_class: str | None
    last_release: str | None  # _PREVIOUSLY_SUPPORTED_MODELS: the last release that served it
    plugin: str | None  # _OOT_SUPPORTED_MODELS: served by this out-of-tree plugin


@cache
def _registry(release: str) -> dict[str, object] | None:
    path = REGISTRY_DIR / f"{release}.json"
    if not path.is_file():
        return None
    data: dict[str, object] = json.loads(path.read_text())
    return data


def known_registries() -> tuple[str, ...]:
    """The releases whose registry gpushare bundles, oldest first."""
    return tuple(sorted((p.stem for p in REGISTRY_DIR.glob("*.json")), key=parse_version))


def registry_entry(name: str, release: str = CHECKED_RELEASE) -> RegistryEntry | None:
    """What `release`'s registry says of `name`, or None when gpushare has no copy of it."""
    data = _registry(release)
    if data is None:
        return None
    categories = data["categories"]
    assert isinstance(categories, dict)
    category = vllm_class = None
    for label, entries in categories.items():  # later dicts win, as in vLLM's _VLLM_MODELS
        if name in entries:
            category, (module, cls) = label, entries[name]
            vllm_class = f"{module}.{cls}"
    previous = data["previously_supported"]
    plugins = data["out_of_tree"]
    assert isinstance(previous, dict) and isinstance(plugins, dict)
    return RegistryEntry(release, category, vllm_class, previous.get(name), plugins.get(name))


def nearest_registry(version: str) -> str:
    """The bundled registry closest to `version` at or below it (else the oldest)."""
    releases = known_registries() or (CHECKED_RELEASE,)
    below = [r for r in releases if parse_version(r) <= parse_version(version)]
    return below[-1] if below else releases[0]


def lookup(architectures: tuple[str, ...]) -> Architecture | None:
    """The row for the first of a config's `architectures` that the table has (vLLM tries them in
    order too: registry.py `_normalize_arch`)."""
    for name in architectures:
        if name in TABLE:
            return TABLE[name]
    return None


def rows_for_model_type(model_type: str) -> tuple[Architecture, ...]:
    return tuple(row for row in ROWS if model_type in row.model_types)


# ---------------------------------------------------------------------------------------------
# The one check: does gpushare size this architecture for this vLLM release?

_LISTED = "`gpushare models --architectures` lists the architectures gpushare sizes"
_FROM_HEADERS = (
    "give a local folder with the checkpoint's *.safetensors: gpushare then reads exact weights "
    "from their headers (and `gpushare calibrate` measures the rest on your GPU)"
)


def _successors(row: Architecture) -> str:
    return ", ".join(row.successors)


def check_served(
    reference: str, architectures: tuple[str, ...], version: str, *, exact_weights: bool
) -> str | None:
    """Refuse what gpushare cannot size for vLLM `version` (`ArchitectureError`, exit 2), else
    return None, or a note when an architecture outside the table is sized from exact weights.

    In the table and served by `version`: sized. In the table but not served by `version` (a
    row vLLM dropped, or one newer than it): refused, naming the releases that serve it and its
    successors. Outside the table: refused, saying what the nearest bundled vLLM registry knows
    of it, unless vLLM serves it as a text generator and `exact_weights` (safetensors headers or
    a calibration) stand in for the layout gpushare lacks."""
    row = lookup(architectures)
    if row is not None:
        if row.served.serves(version):
            return None
        raise _not_served(reference, row, version)
    if not architectures:
        raise ArchitectureError(
            f"{reference}: config.json names no architectures; vLLM refuses such a model "
            "(registry.py: 'No model architectures are specified')",
            hint='add the model class to config.json, e.g. "architectures": ["LlamaForCausalLM"]',
        )
    release = nearest_registry(version)
    looked = [(a, registry_entry(a, release)) for a in architectures]
    known = [(a, e) for a, e in looked if e is not None and e.category is not None]
    name, entry = known[0] if known else looked[0]
    newer = "" if release == version else f" (gpushare has the registry of vLLM {release}, not {version})"
    if entry is not None and entry.plugin is not None:
        raise ArchitectureError(
            f"{reference}: {name} is served by an out-of-tree plugin ({entry.plugin}), not by vLLM "
            "itself, and gpushare does not size it",
            hint=_LISTED,
        )
    last = entry.last_release if entry is not None else None
    if last is not None and parse_version(version) > parse_version(last):
        raise ArchitectureError(
            f"{reference}: vLLM {version} does not serve {name}: vLLM served it until {last} "
            "(its registry's _PREVIOUSLY_SUPPORTED_MODELS), and gpushare has no layout for it",
            hint=f"use a newer model, or plan for vLLM {last} or older with a local folder that has "
            f"its *.safetensors; {_LISTED}",
        )
    if last is not None:
        category, served_as = _suffix_category(name), f"vLLM served it until {last}"
    elif entry is not None and entry.category is not None:
        category, served_as = entry.category, f"vLLM {release} serves it as {entry.vllm_class}"
    else:
        raise ArchitectureError(
            f"{reference}: vLLM does not serve {name}: it is not in vLLM {release}'s model "
            f"registry{newer}, and gpushare does not size it",
            hint=f"check `architectures` in config.json; {_LISTED}",
        )
    if category == "text_generation":
        if exact_weights:
            return (
                f"{name} is not in gpushare's table ({served_as}): weights are the checkpoint's, the KV "
                "cache and activation a standard decoder's, unchecked for this architecture; "
                "`gpushare calibrate` measures them"
            )
        raise ArchitectureError(
            f"{reference}: gpushare has no layout for {name} ({served_as}), so its weights cannot be "
            "computed from config.json",
            hint=f"{_FROM_HEADERS}; {_LISTED}",
        )
    kind = category.replace("_", " ") if category else "such"
    raise ArchitectureError(
        f"{reference}: gpushare has no layout for {name} ({served_as}); it sizes {kind} models only "
        "from its table",
        hint=_LISTED,
    )


# vLLM's suffix rule for names its registry does not decide (config/model.py _SUFFIX_TO_DEFAULTS):
# these suffixes are text generators.
_GENERATE_SUFFIXES = ("ForCausalLM", "ForConditionalGeneration", "ChatModel", "LMHeadModel")


def _suffix_category(name: str) -> str | None:
    if name.endswith("ForConditionalGeneration"):
        return None  # multimodal as often as not: not a plain decoder
    return "text_generation" if name.endswith(_GENERATE_SUFFIXES) else None


def check_runner(reference: str, row: Architecture | None, runner: Runner, task: PoolingTask | None) -> None:
    """Refuse a runner or task vLLM refuses for this class (config/model.py L588-613), or one
    that would not change what vLLM builds (adapters.py as_embedding_model / as_seq_cls_model
    return a pooling class as it is)."""
    if row is None:
        return
    if row.runner == "pooling" and runner == "generate":
        raise ArchitectureError(
            f"{reference}: {row.name} is a pooling model ({row.default_task()}); vLLM refuses "
            "`--runner generate` for it ('Embedding models do not support `--runner generate`')",
            hint="serve it with runner: pooling, or leave the runner to auto",
        )
    if runner == "pooling" and row.tasks and task is not None and task not in row.tasks:
        raise ArchitectureError(
            f"{reference}: {row.name} serves {', '.join(row.tasks)} only; `--convert {task}` does not "
            "change a pooling class (vLLM's adapters return it as it is)",
            hint=f"drop the task, or use a model whose class serves {task}",
        )


def resolve_pooling(
    row: Architecture | None, runner: str, task: str | None, sentence_transformers: bool
) -> tuple[Runner, PoolingTask | None]:
    """(runner, --convert task) for a requested `runner` (auto, generate, pooling) and `task`
    (`TaskName` or None), as vLLM resolves them (config/model.py L958-1031): a task implies the
    pooling runner; a text generator under the pooling runner converts to `embed` by default; a
    pooling class keeps its own task (None here, the flag is not needed)."""
    convert: PoolingTask | None = None
    if task is not None:
        if task not in TASK_NAMES:
            raise InputError(f"task {task!r}: use one of {', '.join(TASK_NAMES)}")
        convert = "embed" if task == "embed" else "classify"
        if runner == "generate":
            raise InputError(
                f"task {task!r} needs the pooling runner, not generate", hint="drop --runner generate"
            )
        runner = "pooling"
    resolved = resolve_runner(row, runner, sentence_transformers)
    if resolved == "pooling" and convert is None and (row is None or row.runner == "generate"):
        convert = "embed"
    return resolved, convert if resolved == "pooling" else None


def resolve_runner(row: Architecture | None, requested: str, sentence_transformers: bool) -> Runner:
    """vLLM's `--runner auto` (config/model.py L934-980): pooling for a folder with a
    Sentence-Transformers pooling config (Qwen3-Embedding ships one), else the class's own
    runner; an explicit runner stands."""
    if requested in ("generate", "pooling"):
        return "pooling" if requested == "pooling" else "generate"
    if sentence_transformers:
        return "pooling"
    return row.runner if row is not None else "generate"


def _not_served(reference: str, row: Architecture, version: str) -> ArchitectureError:
    served = row.served
    if served.until is not None and parse_version(version) > parse_version(served.until):
        instead = f", or a successor: {_successors(row)}" if row.successors else ""
        return ArchitectureError(
            f"{reference}: vLLM {version} does not serve {row.name}: vLLM served it until {served.until} "
            "(its registry's _PREVIOUSLY_SUPPORTED_MODELS)",
            hint=f"plan for vLLM {served.until} or older (defaults.vllm_version, --vllm-version){instead}",
        )
    return ArchitectureError(
        f"{reference}: vLLM {version} does not serve {row.name} yet: the first release that does is "
        f"{served.since}",
        hint=f"plan for vLLM {served.since} or newer (defaults.vllm_version, --vllm-version)",
    )
