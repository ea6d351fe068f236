"""The gateway's routing table: a model name or alias -> the instance that serves it.

Pure data, no I/O. The supervisor owns one `RouteTable` and flips an instance's availability as it
restarts it; a standalone gateway fills one from `--upstream` flags or the state file. The gateway
only reads it through the `Routes` protocol, so it never depends on how instances are launched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from gpushare.runtime.phase import InstancePhase


@dataclass(frozen=True)
class Upstream:
    """One vLLM instance as the gateway sees it.

    `served_name` is the name vLLM itself knows (`--served-model-name`); a request that names an
    alias is rewritten to it. `available` is false while the instance is starting, restarting or
    given up on; the gateway then answers 503 with `Retry-After: retry_after_s` at once.
    """

    instance: str
    served_name: str
    base_url: str
    aliases: tuple[str, ...] = ()
    available: bool = True
    state: InstancePhase = "ready"
    retry_after_s: int = 5
    read_timeout_s: float | None = None
    """This route's read timeout when it has its own (a routes file's `read_timeout_s`); None: the
    gateway's (GatewayConfig.read_timeout)."""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.served_name, *self.aliases)


class Routes(Protocol):
    """What the gateway needs to route: look a name up, list everything."""

    def lookup(self, name: str) -> Upstream | None: ...

    def upstreams(self) -> Sequence[Upstream]: ...


class DuplicateModelName(ValueError):
    """Two instances claim the same served name or alias."""


class RouteTable:
    """The in-memory `Routes`: replaced wholesale or updated one instance at a time.

    Lookups are a dict get, so the proxy's hot path costs nothing here. Every method runs on the
    event loop's thread (the supervisor and the gateway share one loop), so no lock.
    """

    def __init__(self, upstreams: Iterable[Upstream] = ()) -> None:
        self._by_instance: dict[str, Upstream] = {}
        self._by_name: dict[str, str] = {}
        self.replace(upstreams)

    def replace(self, upstreams: Iterable[Upstream]) -> None:
        by_instance: dict[str, Upstream] = {}
        by_name: dict[str, str] = {}
        for upstream in upstreams:
            if upstream.instance in by_instance:
                raise DuplicateModelName(f"instance {upstream.instance!r} is listed twice")
            by_instance[upstream.instance] = upstream
            for name in upstream.names:
                other = by_name.get(name)
                if other is not None and other != upstream.instance:
                    raise DuplicateModelName(
                        f"model name {name!r} is served by both {other!r} and {upstream.instance!r}"
                    )
                by_name[name] = upstream.instance
        self._by_instance = by_instance
        self._by_name = by_name

    def set_state(
        self, instance: str, *, available: bool, state: InstancePhase, retry_after_s: int | None = None
    ) -> None:
        """Mark one instance up or down; unknown instances are ignored (removed meanwhile)."""
        current = self._by_instance.get(instance)
        if current is None:
            return
        self._by_instance[instance] = replace(
            current,
            available=available,
            state=state,
            retry_after_s=current.retry_after_s if retry_after_s is None else max(1, retry_after_s),
        )

    def lookup(self, name: str) -> Upstream | None:
        instance = self._by_name.get(name)
        return None if instance is None else self._by_instance[instance]

    def upstreams(self) -> Sequence[Upstream]:
        return list(self._by_instance.values())


ROUTES_FILE_HELP = "a `routes:` list of {model, aliases, url}, as `gpushare export k8s` writes it"


def routes_from_document(data: object, source: str) -> list[Upstream]:
    """The upstreams a routes file lists (YAML or JSON, already parsed):

        routes:
        - model: qwen2.5-7b          # the name vLLM serves (--served-model-name)
          aliases: [qwen]            # more names routed to it (optional)
          url: http://classic-qwen2-5-7b:8001
          read_timeout_s: 600        # the longest it may send nothing (optional, see gateway.py)

    Raises InputError naming `source`, the entry and the field."""
    from gpushare.errors import InputError

    if not isinstance(data, dict) or not isinstance(data.get("routes"), list) or not data["routes"]:
        raise InputError(f"{source}: expected {ROUTES_FILE_HELP}", hint="see `gpushare gateway --help`")
    unknown_top = sorted(set(data) - {"routes"})
    if unknown_top:
        raise InputError(f"{source}: unknown key {unknown_top[0]!r}; only `routes` is read")
    out: list[Upstream] = []
    for i, entry in enumerate(data["routes"]):
        where = f"{source}: routes[{i}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected a mapping with model and url")
        unknown = sorted(set(entry) - {"model", "aliases", "url", "read_timeout_s"})
        if unknown:
            raise InputError(
                f"{where}: unknown key {unknown[0]!r} (model, aliases, url and read_timeout_s are read)"
            )
        model, url, aliases = entry.get("model"), entry.get("url"), entry.get("aliases", [])
        read_timeout = entry.get("read_timeout_s")
        if not isinstance(model, str) or not model:
            raise InputError(f"{where}.model: must be the served model name")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InputError(f"{where}.url: must start with http:// or https://, got {url!r}")
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
            raise InputError(f"{where}.aliases: must be a list of names")
        if read_timeout is not None and (
            isinstance(read_timeout, bool) or not isinstance(read_timeout, int | float) or read_timeout <= 0
        ):
            raise InputError(
                f"{where}.read_timeout_s: must be a number of seconds > 0, got {read_timeout!r}; "
                "leave it out for the gateway's --read-timeout"
            )
        out.append(
            Upstream(
                instance=model,
                served_name=model,
                base_url=url.rstrip("/"),
                aliases=tuple(aliases),
                read_timeout_s=None if read_timeout is None else float(read_timeout),
            )
        )
    return out
