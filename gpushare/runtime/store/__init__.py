"""What runs, on disk: the state directory and state file (`state.py`), the profile lock
(`lock.py`), and the instances' logs (`logs.py`). Read by the launcher and the background service."""
