"""bench/gpu/make_quantized_dummy.py: real-shaped safetensors headers, no data on disk."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpushare.hfconfig import parse_config
from gpushare.resolve import read_safetensors_header, tensors_in_folder
from gpushare.weights import weight_bytes_from_config, weights_from_header

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu" / "make_quantized_dummy.py"
GPTQ_CONFIG = ROOT / "gpushare" / "catalog" / "hf_configs" / "Qwen--Qwen2.5-32B-Instruct-GPTQ-Int4.json"
LLAMA2_CONFIG = ROOT / "gpushare" / "catalog" / "hf_configs" / "meta-llama--Llama-2-7b-chat-hf.json"
HAS_TOKENIZER_LIBS = all(importlib.util.find_spec(m) for m in ("tokenizers", "transformers"))


def _run(config: Path, out: Path, tokenizer: bool = False) -> None:
    args = [sys.executable, str(SCRIPT), str(config), str(out)] + ([] if tokenizer else ["--no-tokenizer"])
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=120)


def _check_folder(out: Path) -> None:
    arch = parse_config(json.loads((out / "config.json").read_text()), out.name)
    tensors = tensors_in_folder(out)
    assert tensors is not None
    from_header = weights_from_header(list(tensors), arch, 2)
    assert abs(from_header - weight_bytes_from_config(arch, 2)) < 4 * 2**20
    files = sorted(out.glob("*.safetensors"))
    on_disk = sum(f.stat().st_blocks * 512 for f in out.iterdir())
    assert on_disk < 4 * 2**20  # sparse: headers only
    for f in files:
        header = read_safetensors_header(f)
        with f.open("rb") as fh:
            hlen = int.from_bytes(fh.read(8), "little")
        assert hlen % 8 == 0
        spans = sorted(v["data_offsets"] for k, v in header.items() if k != "__metadata__")
        assert spans[0][0] == 0
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
        assert f.stat().st_size == 8 + hlen + spans[-1][1]
        assert f.stat().st_size <= 5_000_000_000 + 8 + hlen


def test_gptq_folder(tmp_path: Path) -> None:
    out = tmp_path / "gptq"
    _run(GPTQ_CONFIG, out, tokenizer=HAS_TOKENIZER_LIBS)
    assert json.loads((out / "config.json").read_text()) == json.loads(GPTQ_CONFIG.read_text())
    _check_folder(out)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    names = set(index["weight_map"])
    assert {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} <= names
    shapes = {t.name: (t.dtype, t.shape) for t in tensors_in_folder(out) or ()}
    assert set(shapes) == names
    # Qwen2.5-32B: hidden 5120, 40 heads / 8 KV heads of 128, intermediate 27648, 4 bits, group 128.
    assert shapes["model.layers.63.self_attn.q_proj.qweight"] == ("I32", (640, 5120))
    assert shapes["model.layers.0.self_attn.k_proj.qzeros"] == ("I32", (40, 128))
    assert shapes["model.layers.0.self_attn.k_proj.scales"] == ("F16", (40, 1024))
    assert shapes["model.layers.0.self_attn.k_proj.bias"] == ("F16", (1024,))
    assert shapes["model.layers.0.mlp.down_proj.qweight"] == ("I32", (3456, 5120))
    assert shapes["model.layers.0.mlp.down_proj.g_idx"] == ("I32", (27648,))
    assert shapes["model.layers.0.post_attention_layernorm.weight"] == ("F16", (5120,))
    quantized = {n.rsplit(".", 1)[0] for n, (dtype, _) in shapes.items() if dtype == "I32"}
    assert len(quantized) == 64 * 7  # what vLLM's auto_gptq reads as modules_in_block_to_quantize
    if HAS_TOKENIZER_LIBS:
        assert (out / "tokenizer.json").is_file()


def test_awq_folder(tmp_path: Path) -> None:
    config = json.loads(LLAMA2_CONFIG.read_text())
    config["torch_dtype"] = "float16"
    config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True}
    path = tmp_path / "llama2-awq.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "awq"
    _run(path, out)
    assert [f.name for f in out.glob("*.safetensors")] == ["model.safetensors"]
    _check_folder(out)
    shapes = {t.name: (t.dtype, t.shape) for t in tensors_in_folder(out) or ()}
    assert shapes["model.layers.0.mlp.down_proj.qweight"] == ("I32", (11008, 512))
    assert shapes["model.layers.0.mlp.down_proj.qzeros"] == ("I32", (86, 512))
    assert shapes["model.layers.0.mlp.down_proj.scales"] == ("F16", (86, 4096))
    assert not any(n.endswith("g_idx") for n in shapes)


def test_safetensors_library_opens_it(tmp_path: Path) -> None:
    safetensors = pytest.importorskip("safetensors")
    out = tmp_path / "gptq"
    _run(GPTQ_CONFIG, out)
    keys = 0
    for f in sorted(out.glob("*.safetensors")):
        with safetensors.safe_open(str(f), "pt") as fh:  # metadata only: no tensor is read
            names = list(fh.keys())
            keys += len(names)
            assert fh.metadata() == {"format": "pt"}
            if "model.layers.0.self_attn.q_proj.qweight" in names:
                assert fh.get_slice("model.layers.0.self_attn.q_proj.qweight").get_shape() == [640, 5120]
    assert keys == len(json.loads((out / "model.safetensors.index.json").read_text())["weight_map"])
