"""GPU inventory: the NVML edge and its static/test twin."""
