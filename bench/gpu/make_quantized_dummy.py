"""Write a dummy folder for a GPTQ or AWQ checkpoint that vLLM serves with `--load-format dummy`.

Usage: PYTHONPATH=$PWD python3 bench/gpu/make_quantized_dummy.py CONFIG_JSON OUT_DIR [--no-tokenizer]

vLLM 0.26.0's GPTQ method (quantization/auto_gptq.py) and AWQ method (auto_awq.py) read the
checkpoint's safetensors headers to learn which modules are quantized (any tensor whose dtype is
not a float); a folder with only config.json gets every layer built unquantized. This script writes
the safetensors files with REAL headers (every tensor of the real checkpoint, its HF name, dtype
and shape, correct data offsets) and then extends each file to its full size with a sparse
truncate, so no data is written and the folder takes a few KiB of disk. Shards of at most 5 GB with
a model.safetensors.index.json, as `save_pretrained` writes them. config.json is copied and a tiny
tokenizer is written (as ../shared/device-vllm/make_dummy_model.py does).

The tensor list comes from gpushare.weights.model_tensors (one source of truth with the memory
model), renamed to the HF checkpoint names:
  GPTQ (AutoGPTQ packing): qweight I32 [K*b/32, N], qzeros I32 [K/g, N*b/32], scales F16 [K/g, N],
                           g_idx I32 [K]
  AWQ:                     qweight I32 [K, N*b/32], qzeros I32 [K/g, N*b/32], scales F16 [K/g, N]
for a linear with K inputs, N outputs, b bits and group size g; every other tensor in the config's
float dtype. Runs with the standard library and gpushare only (tokenizers/transformers for the
tokenizer).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gpushare.hfconfig import ModelArch, Quantization, parse_config  # noqa: E402
from gpushare.units import cdiv  # noqa: E402
from gpushare.weights import WeightTensor, model_tensors  # noqa: E402

MAX_SHARD_BYTES = 5_000_000_000  # save_pretrained's default max_shard_size "5GB"
DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4}
FLOAT_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "half": "F16", "float": "F32"}
NORM_NAMES = (
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
)
# Model types whose checkpoints use the Llama-style names written here.
SUPPORTED = {
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "phi3",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "deepseek_v2",
    "deepseek_v3",
}

Entry = tuple[str, str, tuple[int, ...]]  # (name, safetensors dtype, shape)


def _quantized(name: str, n_out: int, k_in: int, q: Quantization) -> list[Entry]:
    """The packed tensors of one quantized linear (K inputs, N outputs)."""
    group = k_in if q.group_size in (-1, 0) else q.group_size
    groups = cdiv(k_in, group)
    pack = 32 // q.bits
    zeros = (name + ".qzeros", "I32", (groups, cdiv(n_out, pack)))
    scales = (name + ".scales", "F16", (groups, n_out))
    if q.method == "awq":
        return [(name + ".qweight", "I32", (k_in, cdiv(n_out, pack))), zeros, scales]
    return [
        (name + ".qweight", "I32", (cdiv(k_in * q.bits, 32), n_out)),
        zeros,
        scales,
        (name + ".g_idx", "I32", (k_in,)),
    ]


def _linear(name: str, n_out: int, k_in: int, quantized: bool, arch: ModelArch, fdt: str) -> list[Entry]:
    q = arch.quantization
    if quantized and q is not None and not any(m and m in name for m in q.modules_not_converted):
        return _quantized(name, n_out, k_in, q)
    return [(name + ".weight", fdt, (n_out, k_in))]


def _split(t: WeightTensor, arch: ModelArch) -> Iterator[tuple[str, int, int]]:
    """One model_tensors linear as the checkpoint's linears: (HF module name, N, K)."""
    prefix, _, leaf = t.name.rpartition(".")
    mixtral = arch.model_type == "mixtral"
    if leaf == "w13":  # fused experts: gate and up of each expert
        gate, up = ("w1", "w3") if mixtral else ("gate_proj", "up_proj")
        for e in range(t.count):
            yield f"{prefix}.{e}.{gate}", t.out_features // 2, t.in_features
            yield f"{prefix}.{e}.{up}", t.out_features // 2, t.in_features
        return
    if leaf == "w2":
        name = "w2" if mixtral else "down_proj"
        for e in range(t.count):
            yield f"{prefix}.{e}.{name}", t.out_features, t.in_features
        return
    if prefix.endswith(".shared_experts") and arch.moe and arch.moe.shared_expert_intermediate_size:
        prefix = prefix[: -len("shared_experts")] + "shared_expert"  # Qwen2-MoE: one shared expert
    if leaf == "gate_up_proj" and arch.model_type != "phi3":
        yield f"{prefix}.gate_proj", t.out_features // 2, t.in_features
        yield f"{prefix}.up_proj", t.out_features // 2, t.in_features
        return
    yield t.name, t.out_features, t.in_features


def checkpoint_tensors(arch: ModelArch) -> list[Entry]:
    """Every tensor of the real checkpoint, in HF naming, in model order."""
    if arch.model_type not in SUPPORTED:
        raise SystemExit(f"{arch.name}: model_type {arch.model_type!r} is not supported here")
    fdt = FLOAT_DTYPES.get(arch.torch_dtype, "BF16")
    q_out, kv_out = arch.num_attention_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim
    out: list[Entry] = []
    qkv: list[Entry] = []  # phi3: q, k and v are one qkv_proj in the checkpoint
    for t in model_tensors(arch):
        if t.name == "embed_tokens":
            out.append(("model.embed_tokens.weight", fdt, (t.out_features, t.in_features)))
            continue
        if t.name == "norm":
            out.append(("model.norm.weight", fdt, (t.out_features,)))
            continue
        if t.name == "lm_head":
            out.append(("lm_head.weight", fdt, (t.out_features, t.in_features)))
            continue
        name = "model." + t.name
        if arch.model_type == "mixtral":
            name = name.replace(".mlp.", ".block_sparse_moe.")
        prefix, _, leaf = name.rpartition(".")
        if leaf.startswith("norm") and leaf[4:].isdigit():
            out.append((f"{prefix}.{NORM_NAMES[int(leaf[4:])]}.weight", fdt, (t.out_features,)))
        elif leaf == "qkv_bias":
            out += [
                (f"{prefix}.{p}.bias", fdt, (n,))
                for p, n in (("q_proj", q_out), ("k_proj", kv_out), ("v_proj", kv_out))
            ]
        elif t.in_features == 1:  # other vectors (MLA layernorms)
            out.append((name + ".weight", fdt, (t.out_features,)))
        elif arch.model_type == "phi3" and leaf in ("q_proj", "k_proj", "v_proj"):
            qkv.append((name, "", (t.out_features, t.in_features)))
            if leaf == "v_proj":
                n_out = sum(s[0] for _, _, s in qkv)
                out += _linear(f"{prefix}.qkv_proj", n_out, t.in_features, True, arch, fdt)
                qkv = []
        elif not t.quantizable:  # MoE router, shared-expert gate
            out.append((name + ".weight", fdt, (t.out_features, t.in_features)))
        else:
            for hf, n_out, k_in in _split(dataclasses.replace(t, name=name), arch):
                out += _linear(hf, n_out, k_in, True, arch, fdt)
    return out


def _nbytes(e: Entry) -> int:
    n = DTYPE_BYTES[e[1]]
    for d in e[2]:
        n *= d
    return n


def write_shard(path: Path, entries: list[Entry]) -> int:
    """Write the header of one safetensors file and extend it sparsely to its full size."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in entries:
        size = _nbytes((name, dtype, shape))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        fh.truncate(8 + len(raw) + offset)  # sparse: no data blocks
    return offset


def write_weights(arch: ModelArch, out: Path) -> list[Path]:
    entries = checkpoint_tensors(arch)
    shards: list[list[Entry]] = [[]]
    size = 0
    for e in entries:
        if shards[-1] and size + _nbytes(e) > MAX_SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += _nbytes(e)
    if len(shards) == 1:
        path = out / "model.safetensors"
        write_shard(path, shards[0])
        return [path]
    paths, weight_map, total = [], {}, 0
    for i, shard in enumerate(shards, 1):
        path = out / f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        total += write_shard(path, shard)
        weight_map.update({name: path.name for name, _, _ in shard})
        paths.append(path)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return paths


def write_tokenizer(out: Path) -> None:
    """A tiny BPE tokenizer with a chat template (the same as make_dummy_model.py's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lines = ["the quick brown fox jumps over the lazy dog", "several models share one gpu", "0123456789"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(lines * 50, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    hf.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    hf.save_pretrained(str(out))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path, help="config.json of the quantized checkpoint")
    ap.add_argument("out", type=Path, help="folder to write (created)")
    ap.add_argument("--no-tokenizer", action="store_true", help="skip the tokenizer (tests)")
    args = ap.parse_args(argv)
    raw = json.loads(args.config.read_text())
    arch = parse_config(raw, args.config.stem)
    if arch.quantization is None:
        print(f"note: {args.config} is not quantized; writing float headers only", file=sys.stderr)
    elif arch.quantization.method not in ("gptq", "awq"):
        raise SystemExit(
            f"{args.config}: quant_method {arch.quantization.method!r}: only gptq and awq are written"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    for old in list(args.out.glob("*.safetensors")) + list(args.out.glob("model.safetensors.index.json")):
        old.unlink()
    shutil.copy(args.config, args.out / "config.json")
    paths = write_weights(arch, args.out)
    if not args.no_tokenizer:
        write_tokenizer(args.out)
    total = sum(p.stat().st_size for p in paths)
    gib = total / 2**30
    print(f"dummy quantized folder: {args.out} ({len(paths)} safetensors file(s), {gib:.2f} GiB, sparse)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
