"""gpushare: plan and run several vLLM instances on shared GPUs."""

__version__ = "0.1.0"
