"""A package, so tests/cli/test_plan.py and tests/core/test_plan.py can share a basename."""
