"""Who can reach the models: the one rule for "listens beyond loopback without an API key", for
a plan's instances and for the gateway. `gpushare plan`, `up`, `supervise` and `gateway` print what
it returns; none of them decides it on its own.

vLLM checks a key when started with `--api-key` or with VLLM_API_KEY in its environment
(vllm/entrypoints/openai/api_server.py 0.26: `args.api_key or [envs.VLLM_API_KEY]`), and without
`--host` it listens on every interface (`sock_addr = (args.host or "", args.port)`). Pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from gpushare.planning.plan import PlannedInstance
from gpushare.vllm.command import VllmCommand, canonical_flag

VLLM_API_KEY_ENV = "VLLM_API_KEY"
GATEWAY_API_KEY_ENV = "GPUSHARE_API_KEY"


def is_loopback(host: str | None) -> bool:
    """Whether only this machine can connect: localhost or a loopback address. None (no --host)
    and a hostname are not: they may resolve to, or bind, every interface."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def instance_has_key(inst: PlannedInstance, environ: Mapping[str, str]) -> bool:
    """Whether vLLM will ask this instance's clients for a key: `--api-key` in its argv, or
    VLLM_API_KEY in its environment (the plan's, or the one it inherits from `environ`)."""
    if any(canonical_flag(arg) == "--api-key" for arg in inst.argv):
        return True
    return bool(inst.env.get(VLLM_API_KEY_ENV) or environ.get(VLLM_API_KEY_ENV))


def instance_warnings(instances: Sequence[PlannedInstance], environ: Mapping[str, str]) -> list[str]:
    """One warning per address the plan's instances listen on beyond loopback without a key."""
    exposed: dict[str, list[str]] = {}
    for inst in instances:
        host = VllmCommand.from_argv(inst.argv).host
        if not is_loopback(host) and not instance_has_key(inst, environ):
            exposed.setdefault(host or "every interface (no --host)", []).append(inst.name)
    return [_instance_warning(names, host) for host, names in exposed.items()]


def _instance_warning(names: Sequence[str], host: str) -> str:
    verb = "listens" if len(names) == 1 else "listen"
    return (
        f"{', '.join(names)} {verb} on {host} without an API key: anyone who reaches that address can "
        "use the model; set defaults.host: 127.0.0.1 (clients come in through the gateway), or give a "
        f"key (extra_args: [--api-key, KEY], or {VLLM_API_KEY_ENV} in env)"
    )


def gateway_warning(host: str, has_key: bool) -> str | None:
    """The gateway's warning when it listens beyond loopback without a key, else None."""
    if is_loopback(host) or has_key:
        return None
    return (
        f"the gateway listens on {host} without an API key: anyone who reaches it can use the models; "
        f"set {GATEWAY_API_KEY_ENV} (or --api-key-file), or listen on 127.0.0.1"
    )
