"""The exact placement for up to MILP_MAX_ITEMS items: a mixed-integer program solved in
lexicographic stages with HiGHS."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gpushare.placement.model import Bin, Item, Strategy, allows

# 1e-6 tolerances cannot add up to a whole unit.
_UNIT_STEPS = 1 << 19
_PWL_PIECES = 8  # Shares of the time limit: placing as many items as possible matters most.
_STAGE_WEIGHT = {"count": 4.0, "pack": 2.0, "spread_min": 2.0, "spread_balance": 1.0}


@dataclass(frozen=True)
class _Stage:
    assignment: dict[str, tuple[int, ...]]
    optimal: bool


class Milp:
    """Variables: x[pair] (item on GPU), p[item] (item placed), then y[gpu] (pack: GPU used),
    t (spread: smallest headroom) or z[gpu] (spread: load penalty).

    GPUs that are interchangeable (same capacity, allowed for the same items) beyond what the items
    could ever use are dropped, and the rest are ordered (y or load non-increasing) to cut symmetry.
    """

    def __init__(self, items: Sequence[Item], bins: Sequence[Bin]) -> None:
        top = max((b.usable_bytes for b in bins), default=0)
        unit = 1 << max(0, math.ceil(math.log2(top / _UNIT_STEPS))) if top > _UNIT_STEPS else 1
        cap = [b.usable_bytes // unit for b in bins]
        need = {item.name: -(-item.need_bytes // unit) for item in items}
        allowed = {
            item.name: [k for k, b in enumerate(bins) if allows(item, b) and need[item.name] <= cap[k]]
            for item in items
        }
        self.items = [item for item in items if len(allowed[item.name]) >= item.tp]
        kept, self.chains = _reduce_bins(self.items, bins, allowed)
        self.bins = [bins[k] for k in kept]
        self.cap = [cap[k] for k in kept]
        position = {k: j for j, k in enumerate(kept)}
        self.need = [need[item.name] for item in self.items]
        self.pairs = [
            (i, position[k]) for i, item in enumerate(self.items) for k in allowed[item.name] if k in position
        ]
        self.nx = len(self.pairs)
        self.cols_on: list[list[int]] = [[] for _ in self.bins]
        self.item_cols: list[list[int]] = [[] for _ in self.items]
        for col, (i, j) in enumerate(self.pairs):
            self.cols_on[j].append(col)
            self.item_cols[i].append(col)
        self.extra = self.nx + len(self.items)

    def solve(
        self, greedy: Mapping[str, tuple[int, ...]], greedy_value: float, strategy: Strategy, deadline: float
    ) -> tuple[dict[str, tuple[int, ...]], bool] | None:
        """Lexicographic stages; None when no stage produced an answer.

        The greedy answer is not handed to HiGHS as a starting solution; when it meets the
        priority floors its objective (`greedy_value`) becomes a bound in the strategy stage
        instead: the search looks only at answers at least as good.
        """
        if not self.items:
            return {}, True
        levels = sorted({item.priority for item in self.items}, reverse=True)
        floors: dict[int, int] = {}
        for top in levels:  # levels the greedy placed in full (from the top) need no stage
            members = [item for item in self.items if item.priority == top]
            if not all(item.name in greedy for item in members):
                break
            floors[top] = len(members)
        stages: list[tuple[str, int | None]] = [("count", lv) for lv in levels if lv not in floors]
        stages += [("pack", None)] if strategy == "pack" else [("spread_min", None), ("spread_balance", None)]
        best: _Stage | None = None
        proven = True
        for n, (kind, level) in enumerate(stages):
            # Each stage gets its weight's share of what is left; time a stage leaves unused flows on.
            weight_left = sum(_STAGE_WEIGHT[k] for k, _lv in stages[n:])
            share = _STAGE_WEIGHT[kind] / weight_left
            stage_deadline = time.monotonic() + (deadline - time.monotonic()) * share
            limits = self._spread_limits(best.assignment) if kind == "spread_balance" and best else None
            target = None
            if kind in ("pack", "spread_min") and self._meets_floors(greedy, floors):
                target = greedy_value
            stage = self._stage(kind, floors, stage_deadline, level=level, limits=limits, target=target)
            if stage is None:
                return None if best is None else (best.assignment, False)
            best, proven = stage, proven and stage.optimal
            if level is not None:
                floors[level] = sum(
                    1 for item in self.items if item.priority == level and item.name in stage.assignment
                )
        assert best is not None
        return best.assignment, proven

    def _meets_floors(self, assignment: Mapping[str, tuple[int, ...]], floors: Mapping[int, int]) -> bool:
        return all(
            sum(1 for item in self.items if item.priority == lv and item.name in assignment) >= floor
            for lv, floor in floors.items()
        )

    def _spread_limits(self, assignment: Mapping[str, tuple[int, ...]]) -> list[int]:
        """Per-GPU load limits (units) that keep the smallest headroom `assignment` reached."""
        loads = [0] * len(self.bins)
        index = {b.index: j for j, b in enumerate(self.bins)}
        for i, item in enumerate(self.items):
            for g in assignment.get(item.name, ()):
                loads[index[g]] += self.need[i]
        fractions = [(loads[j], self.cap[j]) for j in range(len(self.bins)) if self.cap[j] > 0]
        if not fractions:
            return list(self.cap)
        top_load, top_cap = max(fractions, key=lambda lc: lc[0] / lc[1])
        return [c * top_load // top_cap for c in self.cap]

    def _stage(
        self,
        kind: str,
        floors: Mapping[int, int],
        deadline: float,
        level: int | None = None,
        limits: Sequence[int] | None = None,
        target: float | None = None,
    ) -> _Stage | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0.01:
            return None
        from gpushare.placement import highs  # the solver, only when a MILP is solved

        nb, nx, e0 = len(self.bins), self.nx, self.extra
        n_extra = {"count": 0, "pack": nb, "spread_min": 1, "spread_balance": nb}[kind]
        n_vars = e0 + n_extra
        c = [0.0] * n_vars
        lower, upper = [0.0] * n_vars, [1.0] * n_vars
        integer = [True] * n_vars
        rows = highs.Rows()
        lo: list[float] = []
        hi: list[float] = []

        def row(lb: float, ub: float) -> int:
            lo.append(lb)
            hi.append(ub)
            return len(lo) - 1

        # each placed item takes exactly tp GPUs
        item_rows = [row(0.0, 0.0) for _ in self.items]
        for col, (i, _j) in enumerate(self.pairs):
            rows.add(item_rows[i], col, 1.0)
        for i, item in enumerate(self.items):
            rows.add(item_rows[i], nx + i, -float(item.tp))
        # capacity (and the strategy's link to y / t)
        load_rows = []
        for j in range(nb):
            bound = float(limits[j] if limits is not None else self.cap[j])
            if kind == "pack":
                r = row(-highs.INF, 0.0)
                rows.add(r, e0 + j, -float(self.cap[j]))
            elif kind == "spread_min" and self.cap[j] > 0:
                r = row(-highs.INF, bound)
                rows.add(r, e0, float(self.cap[j]))
            else:
                r = row(-highs.INF, bound)
            load_rows.append(r)
        for col, (i, j) in enumerate(self.pairs):
            rows.add(load_rows[j], col, float(self.need[i]))
        # priority floors
        for lv, floor in floors.items():
            r = row(float(floor), highs.INF)
            members = [i for i, item in enumerate(self.items) if item.priority == lv]
            for i in members:
                rows.add(r, nx + i, 1.0)
            if floor == len(members):
                for i in members:
                    lower[nx + i] = 1.0
        # symmetry among interchangeable GPUs
        for a, b in self.chains:
            r = row(0.0, highs.INF)
            if kind == "pack":
                rows.add(r, e0 + a, 1.0)
                rows.add(r, e0 + b, -1.0)
            else:
                for j, sign in ((a, 1.0), (b, -1.0)):
                    for col in self.cols_on[j]:
                        rows.add(r, col, sign * self.need[self.pairs[col][0]])

        if kind == "count":
            for i, item in enumerate(self.items):
                if item.priority == level:
                    c[nx + i] = -1.0
        elif kind == "pack":
            for col, (_i, j) in enumerate(self.pairs):  # x <= y
                r = row(-highs.INF, 0.0)
                rows.add(r, col, 1.0)
                rows.add(r, e0 + j, -1.0)
            if target is not None:  # no more GPUs than the greedy used
                r = row(-highs.INF, target)
                for j in range(nb):
                    rows.add(r, e0 + j, 1.0)
            rank = sorted(range(nb), key=lambda j: (self.cap[j], self.bins[j].index))
            for position, j in enumerate(rank):
                c[e0 + j] = 1.0 + position / (nb * nb + 1)
        elif kind == "spread_min":
            c[e0] = -1.0
            integer[e0] = False
            if target is not None:  # at least the greedy's headroom, less what unit rounding may cost
                lower[e0] = max(0.0, target - 1e-3)
            # t <= the headroom an item's own GPU(s) would have with it alone (averaged over its tp
            # GPUs; void when unplaced): valid, and it makes the LP bound tight when GPUs hold few items.
            for i, item in enumerate(self.items):
                r = row(-highs.INF, 1.0)
                rows.add(r, e0, 1.0)
                rows.add(r, nx + i, 1.0)
                for col in self.item_cols[i]:
                    cap = self.cap[self.pairs[col][1]]
                    headroom_alone = 1.0 - self.need[i] / cap if cap else 1.0
                    rows.add(r, col, -headroom_alone / item.tp)
        else:
            for col in range(e0, n_vars):
                integer[col] = False
                upper[col] = highs.INF
                c[col] = 1.0
            for j in range(nb):
                if self.cap[j] == 0:
                    continue
                for piece in range(_PWL_PIECES):
                    # z >= f**2 on [piece/K, (piece+1)/K]: slope (2p+1)/K, intercept -p(p+1)/K**2
                    r = row(-piece * (piece + 1) / _PWL_PIECES**2, highs.INF)
                    rows.add(r, e0 + j, 1.0)
                    slope = (2 * piece + 1) / _PWL_PIECES / self.cap[j]
                    for col in self.cols_on[j]:
                        rows.add(r, col, -slope * self.need[self.pairs[col][0]])

        res = highs.solve(c, lower, upper, rows, lo, hi, integer=integer, time_limit_s=remaining)
        if res.x is None:
            return None
        return _Stage(assignment=self._decode(res.x), optimal=res.status == "optimal")

    def _decode(self, x: Sequence[float]) -> dict[str, tuple[int, ...]]:
        chosen: dict[int, list[int]] = {}
        for col, (i, j) in enumerate(self.pairs):
            if x[col] > 0.5:
                chosen.setdefault(i, []).append(self.bins[j].index)
        return {
            self.items[i].name: tuple(sorted(gpus))
            for i, gpus in chosen.items()
            if x[self.nx + i] > 0.5 and len(gpus) == self.items[i].tp
        }


def _reduce_bins(
    items: Sequence[Item], bins: Sequence[Bin], allowed: Mapping[str, list[int]]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Keep, of each class of interchangeable GPUs, only as many as the items could use.

    Returns kept bin positions and the symmetry chain as pairs of positions in the kept list
    (earlier GPU first)."""
    classes: dict[tuple[int, frozenset[str]], list[int]] = {}
    for k, b in enumerate(bins):
        users = frozenset(item.name for item in items if k in allowed[item.name])
        classes.setdefault((b.usable_bytes, users), []).append(k)
    kept: list[int] = []
    for (_cap, users), members in classes.items():
        useful = sum(item.tp for item in items if item.name in users)
        kept.extend(members[:useful])
    kept.sort()
    position = {k: j for j, k in enumerate(kept)}
    chains: list[tuple[int, int]] = []
    for (_cap, users), members in classes.items():
        survivors = [position[k] for k in members if k in position]
        if users:
            chains.extend(zip(survivors, survivors[1:], strict=False))
    return kept, chains
