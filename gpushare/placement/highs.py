"""The one place that talks to the HiGHS solver, through its own Python bindings (`highspy`).

HiGHS is what scipy's `linprog(method="highs")` and `milp` wrap; calling it directly costs a tenth
of scipy.optimize's import time (issue 10: `gpushare plan` started in ~0.9 s, 0.35 s of it
importing scipy). The problem is passed the way scipy passes it (constraint rows lhs ≤ A·x ≤ rhs,
A column-wise with row indices sorted and duplicate entries summed, presolve on, no output), so
the answers are the ones scipy's wrapper gave with the same HiGHS release.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from highspy import _core as highs

INF = float("inf")
Status = Literal["optimal", "stopped", "failed"]


class Rows:
    """A sparse constraint matrix, collected as (row, column, value) triplets."""

    def __init__(self) -> None:
        self.entries: dict[tuple[int, int], float] = {}

    def add(self, row: int, col: int, val: float) -> None:
        key = (col, row)
        self.entries[key] = self.entries[key] + val if key in self.entries else val

    def column_wise(self, n_cols: int) -> tuple[list[int], list[int], list[float]]:
        """(start, index, value): compressed sparse columns, rows sorted within each column."""
        start = [0] * (n_cols + 1)
        index: list[int] = []
        value: list[float] = []
        for (col, row), val in sorted(self.entries.items()):
            start[col + 1] += 1
            index.append(row)
            value.append(val)
        for col in range(n_cols):
            start[col + 1] += start[col]
        return start, index, value


@dataclass(frozen=True)
class Result:
    """`optimal`: solved to optimality; `stopped`: the time limit ended it (`x` is the best
    solution found, if any); `failed`: infeasible, unbounded or an error (`x` is None)."""

    status: Status
    x: tuple[float, ...] | None
    objective: float | None


def solve(
    cost: Sequence[float],
    col_lower: Sequence[float],
    col_upper: Sequence[float],
    rows: Rows,
    row_lower: Sequence[float],
    row_upper: Sequence[float],
    integer: Sequence[bool] | None = None,
    time_limit_s: float | None = None,
) -> Result:
    """Minimise cost·x subject to row_lower ≤ A·x ≤ row_upper and col_lower ≤ x ≤ col_upper, with
    the columns marked in `integer` integral (an LP when None or none is marked)."""
    n_cols, n_rows = len(cost), len(row_lower)
    start, index, value = rows.column_wise(n_cols)
    lp = highs.HighsLp()
    lp.num_col_ = n_cols
    lp.num_row_ = n_rows
    lp.a_matrix_.num_col_ = n_cols
    lp.a_matrix_.num_row_ = n_rows
    lp.a_matrix_.format_ = highs.MatrixFormat.kColwise
    lp.col_cost_ = list(cost)
    lp.col_lower_ = list(col_lower)
    lp.col_upper_ = list(col_upper)
    lp.row_lower_ = list(row_lower)
    lp.row_upper_ = list(row_upper)
    lp.a_matrix_.start_ = start
    lp.a_matrix_.index_ = index
    lp.a_matrix_.value_ = value
    is_mip = integer is not None and any(integer)
    if is_mip:
        assert integer is not None
        kinds = (highs.HighsVarType.kContinuous, highs.HighsVarType.kInteger)
        lp.integrality_ = [kinds[bool(flag)] for flag in integer]
    solver = highs._Highs()  # the plain binding: highspy.Highs() logs a banner on stdout
    solver.setOptionValue("output_flag", False)
    solver.setOptionValue("log_to_console", False)
    solver.setOptionValue("presolve", "on")
    if not is_mip:
        solver.setOptionValue("simplex_strategy", 1)  # dual simplex, as scipy's linprog asks
    if time_limit_s is not None:
        solver.setOptionValue("time_limit", float(time_limit_s))
    if solver.passModel(lp) == highs.HighsStatus.kError or solver.run() == highs.HighsStatus.kError:
        return Result("failed", None, None)
    status = solver.getModelStatus()
    info = solver.getInfo()
    limits = (highs.HighsModelStatus.kTimeLimit, highs.HighsModelStatus.kIterationLimit)
    if status == highs.HighsModelStatus.kOptimal:
        outcome: Status = "optimal"
    elif is_mip and status in limits and info.objective_function_value != highs.kHighsInf:
        outcome = "stopped"
    else:
        return Result("failed", None, None)
    solution = solver.getSolution()
    return Result(outcome, tuple(solution.col_value), float(info.objective_function_value))
