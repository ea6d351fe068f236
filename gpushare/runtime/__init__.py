"""The runtime edge: run a Plan as vLLM processes and keep them serving.

phase.py     InstancePhase: the one vocabulary of an instance's phase
host/        the machine behind interfaces (processes, stop ladder, clock, MPS, HTTP probe, ports)
store/       what runs, on disk (state file, profile lock, logs)
launcher/    the `gpushare` command's work: up, down, status, pre-flight, calibrate
service/     the background process: gateway, supervisor, metrics

What a vLLM server says about itself (its log, its /metrics text) is read by the core's
`gpushare/vllm/log.py` and `gpushare/vllm/metrics.py`.
"""
