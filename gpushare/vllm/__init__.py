"""What gpushare knows of vLLM's own interfaces: its command line (`command.py`), its log
(`log.py`) and its sleep mode (`sleep.py`). Pure: no I/O."""
