"""The `gpushare` command's own work on a profile: `up` (`up.py`, in the order of
`start_order.py`, after `preflight.py`), `down` (`down.py`), `status` (`status.py`) and
`calibrate` (`calibrate.py`), all through `Edges` (`edges.py`)."""
