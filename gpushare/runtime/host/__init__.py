"""The machine behind narrow interfaces, each real implementation next to its test fake: processes
(`processes.py`), the stop ladder (`stop.py`), the clock, CUDA MPS control, HTTP probes of a vLLM
server, and the port check."""
