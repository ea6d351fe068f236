"""The `gpushare` command's own work on a profile: `up` (`up.py`, after `preflight.py`, in the
plan's start order: planning/start.py), `down` (`down.py`), `status` (`status.py`) and
`calibrate` (`calibrate.py`), all through `Edges` (`edges.py`)."""
