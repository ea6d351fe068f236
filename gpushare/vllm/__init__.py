"""What gpushare knows of vLLM's own interfaces: its command line (`command.py`) and its log
(`log.py`). Pure: no I/O."""
