"""The runtime edge: start, watch and stop vLLM processes from a Plan (`launch.py`), the state
directory they share (`state.py`), and the small interfaces to the outside world (process runner,
HTTP probe, MPS control, clock) with their real and test implementations."""
