"""The background process of a profile (`gpushare supervise`): the gateway (`gateway.py`, routing
by `routes.py`), the supervisor (`supervisor.py`, with `policy.py` and `supervisor_edges.py`) and
`/metrics` (`metrics.py`) in one event loop; `process.py` runs it and starts and stops it for
`up` and `down`."""
