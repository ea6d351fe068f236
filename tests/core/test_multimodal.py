"""Multimodal models: vision towers as vLLM 0.26.0 builds them, the profile's `modalities`, and the
multimodal part of vLLM's memory profile. Expected numbers are worked out by hand from vLLM's
model files (named in each test) and the exact published config copies in tests/fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpushare.errors import UnsupportedModelError
from gpushare.hfconfig import ModelArch, parse_config
from gpushare.memory import GpuTarget, ServeSettings, estimate
from gpushare.memory.multimodal import v1_encoder_profile
from gpushare.memory.vision import is_tower_tensor, tower_bytes, tower_parameter_count
from gpushare.memory.weights import weights_on_gpu
from gpushare.planning.build import build_plan, plan_loader
from gpushare.profile import ProfileValidationError, parse_profile_text
from gpushare.units import GiB, MiB
from gpushare.vllm.command import VllmCommand
from gpushare.weights import parameter_count

HF_CONFIGS = Path(__file__).parents[1] / "fixtures" / "hf_configs"
H200 = GpuTarget("NVIDIA H200", cuda_total_bytes=150_109_880_320, nvml_total_bytes=150_754_820_096)
H100 = GpuTarget("NVIDIA H100 80GB HBM3", cuda_total_bytes=int(79.18 * GiB), nvml_total_bytes=85_520_809_984)


def raw_of(repo_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HF_CONFIGS / (repo_id.replace("/", "--", 1) + ".json")).read_text())
    return data


def arch_of(repo_id: str) -> ModelArch:
    return parse_config(raw_of(repo_id), repo_id)


# Tower + projector parameters, by hand from vLLM's modules (biases as each file sets them):
# - Qwen2.5-VL-7B (qwen2_5_vl.py:307-700): patch_embed Conv3d 1280 × 3·2·14·14, no bias = 1,505,280;
#   32 blocks × (2 RMSNorm 2·1280 + qkv 3840·1280+3840 + proj 1280²+1280 + gate_up 6840·1280+6840
#   + down 1280·3420+1280 = 19,702,200); merger ln_q 1280 + 5120²+5120 + 3584·5120+3584 =
#   44,574,464 → 676,550,144 (issue 11's number).
# - Qwen3-VL-8B (qwen3_vl.py:347-630): Conv3d 1152·3·2·16·16 + 1152 bias, pos_embed 2304·1152,
#   27 blocks of LayerNorms, qkv, proj, fc1 4304, fc2 (all with bias), merger LN(1152) + 4608²+4608
#   + 4096·4608+4096, three deepstack mergers with LN(4608) → 576,388,336.
# - Gemma-3-4B (siglip.py:281-840, gemma3_mm.py:421-467): Conv2d 1152·3·14·14 + bias, positions
#   (896/14)² · 1152, 27 layers × 15,239,504, post_layernorm 2304 = 416,866,032; projector
#   1152·2560 + RMSNorm 1152 → 419,816,304.
# - llava-1.5-7b (clip.py, llava.py:436-574): CLIP cut at vision_feature_layer -2 → 23 of 24 layers
#   × 12,596,224, class 1024, Conv2d 1024·3·14·14 no bias, 577 · 1024 positions, pre-norm 2048, no
#   post-norm = 290,909,184; projector 4096·1024+4096 + 4096²+4096 = 20,979,712 → 311,888,896.
TOWERS = [
    ("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", 676_550_144),
    ("qwen3-vl-8b", "Qwen/Qwen3-VL-8B-Instruct", 576_388_336),
    ("gemma-3-4b", "google/gemma-3-4b-it", 419_816_304),
    ("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf", 311_888_896),
]


@pytest.mark.parametrize(("case", "repo_id", "params"), TOWERS)
def test_tower_parameters_match_the_published_counts(case: str, repo_id: str, params: int) -> None:
    from gpushare.hfvision import parse_vision_tower

    raw = raw_of(repo_id)
    text = raw.get("text_config") or raw
    tower = parse_vision_tower(raw, int(text.get("hidden_size", 4096)), repo_id)
    assert tower is not None
    assert tower_parameter_count(tower) == params


def test_qwen3_vl_total_is_the_checkpoints() -> None:
    """Qwen3-VL-8B's safetensors hold 8,767,123,696 parameters (SOURCES.md): the text model
    (with untied lm_head and Qwen3's q/k norms) plus the tower."""
    arch = arch_of("Qwen/Qwen3-VL-8B-Instruct")
    assert arch.vision is not None
    assert parameter_count(arch) + tower_parameter_count(arch.vision) == 8_767_123_696


def test_qwen2_vl_tower_from_its_vision_config() -> None:
    """Qwen2-VL-7B's vision_config (no exact published copy was found; these values are the ones
    every derived copy carries, SOURCES.md): embed_dim 1280, mlp_ratio 4, depth 32, merger to 3584.
    qwen2_vl.py:242-600: 32 blocks × (2 LayerNorms 4·1280 + qkv 3840·1280+3840 + proj 1280²+1280 +
    fc1 5120·1280+5120 + fc2 1280·5120+1280) + Conv3d 1,505,280 + merger (LN 2560 + 5120²+5120 +
    3584·5120+3584) = 675,759,104."""
    raw = raw_of("Qwen/Qwen2.5-VL-7B-Instruct")
    raw["architectures"] = ["Qwen2VLForConditionalGeneration"]
    raw["model_type"] = "qwen2_vl"
    raw["vision_config"] = {
        "depth": 32,
        "embed_dim": 1280,
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_chans": 3,
        "hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "temporal_patch_size": 2,
    }
    arch = parse_config(raw, "qwen2-vl-7b")
    assert arch.vision is not None
    assert tower_parameter_count(arch.vision) == 675_759_104


def test_qwen2_5_vl_text_model_is_qwen2_5_7b() -> None:
    """qwen2_5_vl.py runs Qwen2ForCausalLM on the text config, whose attention has QKV bias
    (models/qwen2.py Qwen2Attention: bias=True): the same 7,615,616,512 parameters as
    Qwen2.5-7B-Instruct (same sizes, vocabulary and untied head), 28 × (3584 + 2 × 512) more than
    without the biases; with the tower's 676,550,144 the checkpoint's 8,292,166,656
    (tests/fixtures/published_params.json: its index total_size, 16,584,333,312 B in bf16)."""
    vl, text = arch_of("Qwen/Qwen2.5-VL-7B-Instruct"), arch_of("Qwen/Qwen2.5-7B-Instruct")
    assert vl.qkv_bias and vl.vision is not None
    assert parameter_count(vl) == parameter_count(text) == 7_615_616_512
    assert parameter_count(vl) + tower_parameter_count(vl.vision) == 8_292_166_656


def test_qwen2_5_vl_loads_what_vllm_logged_on_the_h200() -> None:
    """ "Model loading took 15.67 GiB" (bench/gpu/results/h200-i11, qwen2.5-vl-7b). Beyond
    Qwen2.5-7B's text weights: the tower in bf16 (676,550,144 × 2 B), its rotary cache
    8192 × 40 × 2 B, the 1 MiB tail of the merger's 35 MiB mlp.2 block (the load-time allocator
    rounds blocks of 20 MiB and more to 2 MiB, memory/weights.py), and M-RoPE's cache of
    4 × 128,000 rows × 128 × 2 B (mrope.py:236-246) instead of 128,000 rows."""
    arch = arch_of("Qwen/Qwen2.5-VL-7B-Instruct")
    assert arch.mrope
    settings = ServeSettings(max_model_len=8192)
    with_tower, _ = weights_on_gpu(arch, settings, H200, None)
    text_only, _ = weights_on_gpu(
        arch, ServeSettings(max_model_len=8192, language_model_only=True), H200, None
    )
    assert with_tower - text_only == 676_550_144 * 2 + 8192 * 40 * 2 + MiB
    assert abs(with_tower / GiB - 15.67) < 0.005


@pytest.mark.parametrize(
    ("case", "settings", "built"),
    [
        ("default: every modality on", ServeSettings(), True),
        ("--language-model-only", ServeSettings(language_model_only=True), False),
        ("every limit 0", ServeSettings(mm_limits=(("image", 0), ("video", 0))), False),
        ("video still on", ServeSettings(mm_limits=(("image", 0),)), True),
        ("an unrelated modality off", ServeSettings(mm_limits=(("audio", 0),)), True),
    ],
)
def test_the_tower_is_built_unless_all_its_modalities_are_off(
    case: str, settings: ServeSettings, built: bool
) -> None:
    """interfaces.py:256-298: the tower is skipped when every modality it serves has limit 0;
    get_limit_per_prompt (config/multimodal.py:320-333) gives 999 to a modality left out."""
    arch = arch_of("Qwen/Qwen2.5-VL-7B-Instruct")
    size = tower_bytes(arch, settings, 2, 8192, None)
    assert (size > 0) is built


def test_gemma3_tower_is_image_only() -> None:
    arch = arch_of("google/gemma-3-4b-it")
    assert arch.vision is not None and arch.vision.modalities == ("image",)
    assert tower_bytes(arch, ServeSettings(mm_limits=(("image", 0),)), 2, 8192, None) == 0
    assert tower_bytes(arch, ServeSettings(mm_limits=(("video", 0),)), 2, 8192, None) > 0


def test_gemma3_matches_the_h200_run() -> None:
    """gemma-3-4b at a fixed 4 GiB on the H200: "Model loading took 8.61 GiB", 29,908 KV tokens.
    Weights: the text model with Gemma3TextConfig's defaults (tied 262,208 × 2560 embedding), the
    SigLIP tower and projector (419,816,304 × 2 B), two rotary caches ((131,072 × 8 + 131,072) ×
    256 × 2 B = 576 MiB). KV: 29 sliding + 5 full layers → one padding layer, 6 sliding groups and
    1 full group of 5; a block costs 16 × 2 × 4 × 256 × 2 B × 5 = 320 KiB → 13,107 blocks; a
    request needs 512 + 6 × 513 blocks → int(13,107 / 3590 × 8192) = 29,908."""
    arch = arch_of("google/gemma-3-4b-it")
    e = estimate(arch, H200, ServeSettings(max_model_len=8192), kv_cache_memory_bytes=4 * GiB)
    assert e.kv_cache_tokens == 29_908
    assert abs(e.weights_bytes / GiB - 8.61) < 0.05


def test_llava_builds_the_clip_tower_up_to_its_feature_layer() -> None:
    """llava-1.5-7b in fp16 (its torch_dtype): a Llama-2-7B text model (LlamaConfig's defaults under
    a text_config that names only the vocabulary and context) and 23 CLIP layers."""
    arch = arch_of("llava-hf/llava-1.5-7b-hf")
    assert (arch.hidden_size, arch.num_layers, arch.vocab_size) == (4096, 32, 32_064)
    assert arch.vision is not None and arch.vision.num_layers == 23
    e = estimate(arch, H200, ServeSettings(max_model_len=4096), kv_cache_memory_bytes=4 * GiB)
    assert e.dtype == "float16"
    off = estimate(
        arch, H200, ServeSettings(max_model_len=4096, language_model_only=True), kv_cache_memory_bytes=4 * GiB
    )
    assert e.weights_bytes - off.weights_bytes == tower_bytes(arch, ServeSettings(), 2, 8192, None)


def test_qwen3_vl_deepstack_buffers_come_with_the_tower() -> None:
    """qwen3_vl.py:1755-1766: three (max_num_batched_tokens × 4096) bf16 tensors made at init."""
    arch = arch_of("Qwen/Qwen3-VL-8B-Instruct")
    small = tower_bytes(arch, ServeSettings(), 2, 2048, None)
    large = tower_bytes(arch, ServeSettings(), 2, 8192, None)
    assert large - small == 3 * (8192 - 2048) * 4096 * 2


def test_tensor_parallel_splits_the_tower_unless_data_mode() -> None:
    """--mm-encoder-tp-mode data (Qwen-VL only) keeps the whole tower on every rank."""
    arch = arch_of("Qwen/Qwen2.5-VL-7B-Instruct")
    one = tower_bytes(arch, ServeSettings(), 2, 8192, None)
    split = tower_bytes(arch, ServeSettings(tensor_parallel_size=2), 2, 8192, None)
    data = tower_bytes(arch, ServeSettings(tensor_parallel_size=2, mm_encoder_tp_mode="data"), 2, 8192, None)
    assert data == one
    assert one / 2 < split < one * 0.6  # linears halve; the patch embedding and norms stay whole


def test_dense_vlm_profile_leaves_the_encoder_out_and_says_so() -> None:
    """V2 runner (dense VLM): no encoder in the profile, so the activation is the text model's; the
    EncoderRunner's inputs_embeds (8192 × 3584 × 2 B = 56 MiB) sits outside the budget
    (v1/worker/gpu/mm/encoder_runner.py:35-37)."""
    arch = arch_of("Qwen/Qwen2.5-VL-7B-Instruct")
    on = estimate(arch, H200, ServeSettings(max_model_len=8192), kv_cache_memory_bytes=4 * GiB)
    off = estimate(
        arch, H200, ServeSettings(max_model_len=8192, language_model_only=True), kv_cache_memory_bytes=4 * GiB
    )
    assert on.activation_bytes == off.activation_bytes
    assert on.budget.context_bytes - off.budget.context_bytes == 8192 * 3584 * 2
    assert on.kv_cache_tokens == 74_896  # as logged on the H200 at 4 GiB: 4681 blocks × 16
    assert any("does not run the vision encoder" in n for n in on.notes)
    assert any("text only" in n for n in off.notes)


def test_moe_vlm_profile_holds_the_encoder_outputs() -> None:
    """V1 runner (MoE VLM, e.g. Qwen3-VL-30B-A3B): the profile embeds max_items_per_batch dummy
    images of 16,384 tokens (budget max(8192, 16384) → 1 item) and keeps their outputs,
    16,384 × 2048 × 2 B × (1 + 3 deepstack levels) = 256 MiB, during the language model's dummy
    run (gpu_model_runner.py:6364-6438, encoder_budget.py:44-189). The config is Qwen3-VL-8B's
    with a Qwen3-MoE text model: not a published file, a check of the rule."""
    raw = raw_of("Qwen/Qwen3-VL-8B-Instruct")
    raw["architectures"] = ["Qwen3VLMoeForConditionalGeneration"]
    raw["text_config"].update(
        hidden_size=2048,
        num_hidden_layers=48,
        num_attention_heads=32,
        num_key_value_heads=4,
        num_experts=128,
        num_experts_per_tok=8,
        moe_intermediate_size=768,
        model_type="qwen3_vl_moe_text",
    )
    raw["vision_config"]["out_hidden_size"] = 2048
    arch = parse_config(raw, "qwen3-vl-moe")
    profiled = v1_encoder_profile(arch, ServeSettings(), 2, 8192, 1024, 8192)
    assert profiled is not None
    outputs, _, what = profiled
    assert outputs == 256 * MiB
    assert what.startswith("1 image")
    on = estimate(arch, H200, ServeSettings(max_model_len=8192), kv_cache_memory_bytes=4 * GiB)
    off = estimate(
        arch, H200, ServeSettings(max_model_len=8192, language_model_only=True), kv_cache_memory_bytes=4 * GiB
    )
    assert on.activation_bytes - off.activation_bytes == 256 * MiB


def test_a_vision_tower_gpushare_does_not_model_is_refused() -> None:
    raw = raw_of("Qwen/Qwen2.5-VL-7B-Instruct")
    raw["architectures"] = ["FrobVLForConditionalGeneration"]
    with pytest.raises(UnsupportedModelError, match="vision tower gpushare does not model"):
        parse_config(raw, "frob-vl")


@pytest.mark.parametrize(
    ("name", "tower"),
    [
        ("visual.blocks.0.attn.qkv.weight", True),
        ("model.visual.merger.mlp.0.weight", True),
        ("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight", True),
        ("multi_modal_projector.linear_1.weight", True),
        ("model.language_model.layers.0.self_attn.q_proj.weight", False),
        ("lm_head.weight", False),
    ],
)
def test_checkpoint_tower_tensors_are_recognised(name: str, tower: bool) -> None:
    """Header bytes leave the tower out; it is computed from the config (LLaVA's checkpoint holds
    a 24th CLIP layer vLLM never builds)."""
    assert is_tower_tensor(name) is tower


# --- the profile field --------------------------------------------------------------------------


TEXT_ONLY, LIMITS = "--language-model-only", "--limit-mm-per-prompt"


def profile_text(modalities: str) -> str:
    return (
        "gpus: H200\nmodels:\n  - name: vl\n    model: Qwen/Qwen2.5-VL-7B-Instruct\n"
        f"    max_model_len: 8192\n{modalities}"
    )


@pytest.mark.parametrize(
    ("case", "yaml", "flags", "absent"),
    [
        ("unset: vLLM's defaults", "", [], [TEXT_ONLY, LIMITS]),
        ("bare off (a YAML boolean)", "    modalities: off\n", [TEXT_ONLY], [LIMITS]),
        ("quoted off", '    modalities: "off"\n', [TEXT_ONLY], []),
        ("counts", "    modalities: {image: 2, video: 0}\n", [LIMITS, '{"image":2,"video":0}'], [TEXT_ONLY]),
    ],
)  # fmt: skip
def test_modalities_become_vllm_flags(
    case: str, yaml: str, flags: list[str], absent: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    profile = parse_profile_text(profile_text(yaml))
    plan = build_plan(profile, profile.described_gpus() or [], load=plan_loader())
    (inst,) = plan.instances
    argv = list(inst.argv)
    for flag in flags:
        assert flag in argv
    for flag in absent:
        assert flag not in argv
    assert VllmCommand.from_argv(inst.argv).to_argv() == inst.argv


def test_text_only_plans_without_the_tower(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    load = plan_loader()
    weights = []
    for yaml in ("", "    modalities: off\n"):
        profile = parse_profile_text(profile_text(yaml))
        (inst,) = build_plan(profile, profile.described_gpus() or [], load=load).instances
        assert inst.estimate is not None
        weights.append(inst.estimate.weights_bytes)
    assert weights[0] - weights[1] == 676_550_144 * 2 + 8192 * 40 * 2 + MiB


@pytest.mark.parametrize(
    ("case", "yaml", "message"),
    [
        ("a negative count", "    modalities: {image: -1}\n", "modalities.image: must be 0 or more, got -1"),
        ("an unknown modality", "    modalities: {smell: 1}\n", "modalities"),
        ("the flag in extra_args", "    extra_args: [--limit-mm-per-prompt, '{}']\n", "models[].modalities"),
        ("text only in extra_args", "    extra_args: [--language-model-only]\n", "modalities: off"),
    ],
)  # fmt: skip
def test_bad_modalities_are_refused(case: str, yaml: str, message: str) -> None:
    with pytest.raises(ProfileValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_profile_text(profile_text(yaml))


def test_a_bad_count_is_one_problem() -> None:
    """The union's 'off' member does not also refuse a mapping (it printed "{'image': -1} is not
    allowed; use 'off'" above the real problem)."""
    with pytest.raises(ProfileValidationError) as caught:
        parse_profile_text(profile_text("    modalities: {image: -1}\n"))
    assert [p.path for p in caught.value.problems] == ["models[0].modalities.image"]


# --- rotary caches ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "rope", "model_type", "rows"),
    [
        ("default", None, "llama", (131_072,)),
        ("llama3 keeps max_position rows", {"rope_type": "llama3", "factor": 8.0}, "llama", (131_072,)),
        # linear_scaling_rope.py:79-110: max_position × factor rows
        ("linear", {"rope_type": "linear", "factor": 8.0}, "llama", (1_048_576,)),
        # mrope.py:236-246: 4 × max_position rows
        ("M-RoPE", {"type": "mrope", "mrope_section": [16, 24, 24]}, "qwen2_5_vl", (524_288,)),
        # gemma3.py:157-176: the sliding layers' own default rope (rope_local_base_freq)
        ("Gemma-3", {"rope_type": "linear", "factor": 8.0}, "gemma3_text", (1_048_576, 131_072)),
    ],
)
def test_rotary_cache_rows(
    case: str, rope: dict[str, Any] | None, model_type: str, rows: tuple[int, ...]
) -> None:
    from gpushare.hfrope import rope_cache_rows

    cfg = {} if rope is None else {"rope_scaling": rope}
    assert rope_cache_rows(cfg, model_type, 131_072) == rows


def test_calibration_records_are_kept_apart_by_modalities(monkeypatch: pytest.MonkeyPatch) -> None:
    """A measurement with the tower built must not stand in for a text-only instance: the key
    carries the modalities, the same way from a planned instance and from an estimate's settings."""
    from gpushare.calibration import key_for, key_from_planned
    from gpushare.estimate_job import gpu_target

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    load = plan_loader()
    keys = []
    for yaml in ("", "    modalities: off\n"):
        profile = parse_profile_text(profile_text(yaml))
        (inst,) = build_plan(profile, profile.described_gpus() or [], load=load).instances
        keys.append(key_from_planned(inst))
    assert keys[0] != keys[1]
    assert (keys[0].modalities, keys[1].modalities) == ("", "off")
    gpu = gpu_target(parse_profile_text(profile_text("")).described_gpus()[0])  # type: ignore[index]
    facts = load("Qwen/Qwen2.5-VL-7B-Instruct")
    text = ServeSettings(max_model_len=8192, language_model_only=True)
    assert key_for(facts, gpu, text) == keys[1]
