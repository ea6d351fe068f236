"""MIG geometries: which GPU instances can exist together on one GPU.

A 7-slice MIG GPU has 8 memory units and 7 compute slices. A GPU instance of a profile starts at
one of the profile's legal starts and takes `size` consecutive memory units and `slices` compute
slices (`gpushare.catalog.mig`). A geometry is legal when every instance is at a legal start, no
two share a memory unit, no profile is used more often than its `max_count`, and the compute
slices add up to at most 7 (NVIDIA MIG user guide, "Partitioning": combine profiles "such that no
two profiles overlap vertically"; placements from `nvidia-smi mig -lgipp`). A legal geometry is
maximal when no further instance could be created on it.

Drivers before R510 also refused the 4g + 3g pair (MIG user guide); that is not modelled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from gpushare.catalog.mig import COMPUTE_SLICES, MEMORY_UNITS, MigProfile, MigTable
from gpushare.errors import InputError


@dataclass(frozen=True)
class Slice:
    """One GPU instance: a profile at a start (in memory units)."""

    profile: MigProfile
    start: int

    @property
    def units(self) -> range:
        """The memory units it takes."""
        return range(self.start, self.start + self.profile.size)

    @property
    def label(self) -> str:
        """`3g.71gb@4`."""
        return f"{self.profile.name}@{self.start}"


def _order(s: Slice) -> tuple[int, int, str]:
    return (s.start, -s.profile.size, s.profile.name)


@dataclass(frozen=True)
class Geometry:
    """A set of GPU instances on one GPU, ordered by start."""

    slices: tuple[Slice, ...]

    @classmethod
    def of(cls, slices: Iterable[Slice]) -> Geometry:
        return cls(tuple(sorted(slices, key=_order)))

    @property
    def compute_slices(self) -> int:
        return sum(s.profile.slices for s in self.slices)

    @property
    def memory_units(self) -> int:
        return sum(s.profile.size for s in self.slices)

    @property
    def counts(self) -> dict[str, int]:
        """Instances per profile name, largest profile first (what a mig-parted config lists)."""
        return profile_counts(s.profile for s in self.slices)

    @property
    def shape(self) -> tuple[str, ...]:
        """Profile names, largest first: two geometries with the same shape differ only in starts."""
        return tuple(name for name, count in self.counts.items() for _ in range(count))

    @property
    def label(self) -> str:
        return " + ".join(s.label for s in self.slices) or "(empty)"


def profile_counts(profiles: Iterable[MigProfile]) -> dict[str, int]:
    """How many of each profile, largest profile first (what a mig-parted config lists)."""
    listed = list(profiles)
    counted = Counter(p.name for p in listed)
    by_name = {p.name: p for p in listed}
    order = sorted(counted, key=lambda n: (-by_name[n].slices, -by_name[n].size, n))
    return {name: counted[name] for name in order}


def legal_slices(table: MigTable, profiles: Sequence[MigProfile] | None = None) -> tuple[Slice, ...]:
    """Every (profile, legal start) of `profiles` (default: all of the table's)."""
    chosen = table.profiles if profiles is None else profiles
    return tuple(Slice(p, start) for p in chosen for start in p.starts)


def geometry_problems(table: MigTable, slices: Sequence[Slice]) -> list[str]:
    """What makes `slices` an illegal geometry on `table`'s GPU; empty when it is legal."""
    problems: list[str] = []
    own = {p.name: p for p in table.profiles}
    for s in slices:
        if own.get(s.profile.name) != s.profile:
            problems.append(f"{s.profile.name} is not a MIG profile of {table.gpu_key}")
        elif s.start not in s.profile.starts:
            starts = ", ".join(map(str, s.profile.starts))
            problems.append(f"{s.label}: {s.profile.name} may start only at {starts}")
        elif s.start + s.profile.size > MEMORY_UNITS:
            problems.append(f"{s.label} ends past memory unit {MEMORY_UNITS - 1}")
    taken: dict[int, Slice] = {}
    for s in sorted(slices, key=_order):
        for unit in s.units:
            other = taken.get(unit)
            if other is not None and other is not s:
                problems.append(f"{s.label} overlaps {other.label} on memory unit {unit}")
                break
            taken[unit] = s
    for name, count in Counter(s.profile.name for s in slices).items():
        profile = own.get(name)
        if profile is not None and count > profile.max_count:
            problems.append(f"{count} x {name}: at most {profile.max_count} fit on one GPU")
    compute = sum(s.profile.slices for s in slices)
    if compute > COMPUTE_SLICES:
        problems.append(f"{compute} compute slices: a GPU has {COMPUTE_SLICES}")
    return problems


def validate_geometry(table: MigTable, slices: Sequence[Slice], what: str = "MIG geometry") -> Geometry:
    """`slices` as a Geometry; InputError listing every problem when it is illegal."""
    problems = geometry_problems(table, slices)
    if problems:
        raise InputError(
            f"{what} on {table.gpu_key} is not legal: {'; '.join(problems)}",
            hint=f"`gpushare mig profiles {table.gpu_key}` lists each profile's starts",
        )
    return Geometry.of(slices)


def parse_geometry(table: MigTable, text: str, what: str = "MIG geometry") -> Geometry:
    """A geometry from `nvidia-smi mig -cgi`'s tuple syntax: `3g.71gb:4,2g.35gb:0,19:2`.

    An item is a profile name or id with an optional `:START`; items without a start are placed
    after those with one, each at its lowest start that is still free (largest profile first).
    """
    fixed: list[Slice] = []
    loose: list[MigProfile] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise InputError(f"{what}: empty item in {text!r}", hint="write e.g. 3g.71gb:4,2g.35gb:0")
        name, _, start = item.partition(":")
        try:
            profile = table.profile(name)
        except InputError as exc:
            raise InputError(f"{what}: {exc.message}", hint=exc.hint) from None
        if not start:
            loose.append(profile)
        elif start.strip().isdigit():
            fixed.append(Slice(profile, int(start)))
        else:
            raise InputError(f"{what}: start {start!r} of {item!r} is not a number")
    placed = place(table, loose, around=fixed)
    if placed is None:
        validate_geometry(table, fixed, what)  # names the problem if the fixed part is already wrong
        names = ", ".join(p.name for p in loose)
        raise InputError(f"{what}: no free starts left on {table.gpu_key} for {names} in {text!r}")
    return validate_geometry(table, [*fixed, *placed.slices], what)


def place(table: MigTable, profiles: Sequence[MigProfile], around: Sequence[Slice] = ()) -> Geometry | None:
    """Starts for `profiles` next to the instances `around`, or None when they cannot all fit.

    Largest profile first, each at its lowest start that keeps the rest placeable (a search, so a
    fit is found whenever one exists)."""
    if geometry_problems(table, around):
        return None
    order = sorted(profiles, key=lambda p: (-p.slices, -p.size, p.name))

    def search(index: int, chosen: list[Slice]) -> list[Slice] | None:
        if index == len(order):
            return chosen
        for start in order[index].starts:
            trial = [*chosen, Slice(order[index], start)]
            if not geometry_problems(table, [*around, *trial]):
                found = search(index + 1, trial)
                if found is not None:
                    return found
        return None

    found = search(0, [])
    return None if found is None else Geometry.of(found)


def geometries(table: MigTable, profiles: Sequence[MigProfile] | None = None) -> tuple[Geometry, ...]:
    """Every legal non-empty geometry of `profiles` (default: the table's profiles without `+me`
    ones, which are shaped like the plain 1g profile).

    Scans memory units from 0: the lowest unit not yet decided is either left empty or becomes
    the start of an instance, so each set of instances is produced once.
    """
    chosen = _default_profiles(table) if profiles is None else tuple(profiles)
    by_start: dict[int, list[MigProfile]] = {}
    for p in chosen:
        for start in p.starts:
            by_start.setdefault(start, []).append(p)
    found: list[Geometry] = []

    def scan(unit: int, slices: list[Slice], counts: Counter[str], compute: int) -> None:
        if unit >= MEMORY_UNITS:
            if slices:
                found.append(Geometry.of(slices))
            return
        scan(unit + 1, slices, counts, compute)
        for p in by_start.get(unit, ()):
            if unit + p.size > MEMORY_UNITS or compute + p.slices > COMPUTE_SLICES:
                continue
            if counts[p.name] >= p.max_count:
                continue
            counts[p.name] += 1
            scan(unit + p.size, [*slices, Slice(p, unit)], counts, compute + p.slices)
            counts[p.name] -= 1

    scan(0, [], Counter(), 0)
    return tuple(found)


def is_maximal(table: MigTable, geometry: Geometry, profiles: Sequence[MigProfile] | None = None) -> bool:
    """No instance of `profiles` (default as in `geometries`) can be added to `geometry`."""
    chosen = _default_profiles(table) if profiles is None else tuple(profiles)
    used = {unit for s in geometry.slices for unit in s.units}
    counts = Counter(s.profile.name for s in geometry.slices)
    compute = geometry.compute_slices
    for extra in legal_slices(table, chosen):
        fits = (
            extra.start + extra.profile.size <= MEMORY_UNITS
            and used.isdisjoint(extra.units)
            and compute + extra.profile.slices <= COMPUTE_SLICES
            and counts[extra.profile.name] < extra.profile.max_count
        )
        if fits:
            return False
    return True


def maximal_geometries(table: MigTable, profiles: Sequence[MigProfile] | None = None) -> tuple[Geometry, ...]:
    """The legal geometries to which no further instance can be added."""
    return tuple(g for g in geometries(table, profiles) if is_maximal(table, g, profiles))


def iter_shapes(found: Iterable[Geometry]) -> Iterator[tuple[str, ...]]:
    """The distinct shapes of `found`, in first-seen order."""
    seen: set[tuple[str, ...]] = set()
    for g in found:
        if g.shape not in seen:
            seen.add(g.shape)
            yield g.shape


def _default_profiles(table: MigTable) -> tuple[MigProfile, ...]:
    return tuple(p for p in table.profiles if not p.media_extensions)
