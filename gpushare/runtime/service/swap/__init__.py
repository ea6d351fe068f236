"""On-demand models: the gateway's swaps (vLLM's sleep mode), as modules the gateway, the
supervisor and `/metrics` call.

    layout.py    the plan's rooms and awake parts, which instances to put to sleep (pure)
    control.py   /sleep, /wake_up, /is_sleeping, reload_weights: HttpSleepControl, FakeSleepControl
    manager.py   SwapManager: leases, held requests, swaps under a lock per GPU, idle timeout
    stats.py     what it counts (pure); metrics.py exports it (SwapCollector)
    endpoint.py  POST /gpushare/wake/NAME, /gpushare/sleep/NAME, GET /gpushare/swap
    client.py    the CLI's side of that endpoint
"""
