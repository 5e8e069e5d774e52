"""Capacity model of the worker deployment: CPU demand per process from the load, and the
largest load N cores serve (docs/capacity.md; the coefficients come from bench/capacity.py).

The load is members syncing (each a client long-polling `/sync`), messages sent per second, how
many syncing members each message reaches, and bot commands per second. Each process type `p`
needs, in cores (CPU-seconds per second):

    demand_p = base_p + per_member_p * members + per_event_p * rate
               + per_response_p * responses + per_delivery_p * deliveries
               + per_command_p * commands

where deliveries = rate * recipients (each message to each syncing member of its room), and
responses is how many /sync answers carry them. A member whose room gets `lam` messages per
second and whose client needs `turnaround` seconds between one answer and its next request gets
about `1 + lam * turnaround` of them in one answer, so responses = deliveries / (1 + lam *
turnaround), with lam = deliveries / members. The busier the server, the more messages each
answer carries, and the less each message costs.

Two limits: the sum over all processes stays under `headroom * cores`, and a process that runs
Python on one thread at a time (each Synapse process, the front, the bots; Valkey too) stays
under `headroom * 1` core whatever the number of cores. PostgreSQL is one process per
connection, so only the sum limits it.

Pure arithmetic: no I/O, so the unit tests need no server.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

TOTAL = "total"


@dataclass(frozen=True)
class Load:
    members: float
    """Members syncing at once (clients open), not accounts."""
    rate: float = 0.0
    """Messages sent per second, the whole server."""
    recipients: float = 1.0
    """Syncing members in the room of the average message (its sender included)."""
    commands: float = 0.0
    """Bot commands answered per second."""
    turnaround: float = 0.0
    """Seconds from one /sync answer to the client's next request being served: how long new
    messages pile up for the next answer (0: one answer per delivery)."""

    def deliveries(self) -> float:
        return self.rate * self.recipients

    def responses(self) -> float:
        """/sync answers per second that carry new messages."""
        deliveries = self.deliveries()
        if deliveries <= 0 or self.members <= 0:
            return 0.0
        lam = deliveries / self.members
        return deliveries / (1.0 + lam * self.turnaround)

    def at(self, rate: float) -> Load:
        return Load(self.members, rate, self.recipients, self.commands, self.turnaround)


@dataclass(frozen=True)
class Cost:
    """What one process type spends, in CPU-seconds."""

    base: float = 0.0
    """Per second at rest (cores)."""
    per_member: float = 0.0
    """Per syncing member and second, at rest."""
    per_event: float = 0.0
    """Per message sent."""
    per_response: float = 0.0
    """Per /sync answer that carries new messages."""
    per_delivery: float = 0.0
    """Per message delivered to one syncing member's /sync."""
    per_command: float = 0.0
    """Per bot command, everything included (the command, the answer, their encryption)."""
    single_core: bool = True
    """One Python (or Valkey) process: it cannot use more than one core."""

    def fixed(self, load: Load) -> float:
        """The part of the demand that does not grow with the message rate (cores)."""
        return self.base + self.per_member * load.members + self.per_command * load.commands

    def demand(self, load: Load) -> float:
        return (
            self.fixed(load)
            + self.per_event * load.rate
            + self.per_response * load.responses()
            + self.per_delivery * load.deliveries()
        )


def demand(costs: Mapping[str, Cost], load: Load) -> dict[str, float]:
    """Cores each process needs under `load`, plus their sum under TOTAL."""
    each = {name: cost.demand(load) for name, cost in costs.items()}
    return {**each, TOTAL: sum(each.values())}


@dataclass(frozen=True)
class Capacity:
    rate: float
    """The largest message rate (per second) before a limit is reached; 0 when the fixed part
    (members, commands) already exceeds one."""
    limit: str
    """What is reached first: TOTAL (all the cores) or the name of a single-core process."""
    demand: dict[str, float] = field(default_factory=dict)
    """Each process's cores at that rate."""


def max_rate(costs: Mapping[str, Cost], cores: float, load: Load, headroom: float) -> Capacity:
    """The message rate at which `load` (its members, recipients, commands and turnaround; its
    rate is ignored) first reaches `headroom * cores` in total or `headroom` on one single-core
    process. Demand grows with the rate, so each limit is found by bisection."""
    if cores <= 0 or not 0 < headroom <= 1:
        raise ValueError(f"cores must be > 0 and 0 < headroom <= 1; got {cores}, {headroom}")
    limits: list[tuple[float, str]] = [
        (_reach(lambda r: demand(costs, load.at(r))[TOTAL], headroom * cores), TOTAL)
    ]
    for name, cost in costs.items():
        if cost.single_core:
            limits.append((_reach(_one(cost, load), headroom), name))
    rate, limit = min(limits, key=lambda x: x[0])
    return Capacity(rate, limit, demand(costs, load.at(rate)))


def _one(cost: Cost, load: Load) -> Callable[[float], float]:
    return lambda rate: cost.demand(load.at(rate))


def _reach(need: Callable[[float], float], budget: float) -> float:
    """The rate r >= 0 where need(r) = budget (need grows with r); 0 if need(0) is already over,
    inf if it never gets there."""
    if need(0.0) >= budget:
        return 0.0
    high = 1.0
    while need(high) < budget:
        high *= 2
        if high > 1e9:
            return math.inf
    low = 0.0
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if need(mid) < budget else (low, mid)
    return low


def cores_needed(costs: Mapping[str, Cost], load: Load, headroom: float) -> tuple[float, list[str]]:
    """Cores for `load` at `headroom`, and the single-core processes it would overload (each
    then needs more processes of its kind than this deployment has)."""
    need = demand(costs, load)
    over = [n for n, c in costs.items() if c.single_core and need[n] > headroom]
    return need[TOTAL] / headroom, over


def least_squares(rows: Sequence[Sequence[float]], ys: Sequence[float]) -> list[float]:
    """The x minimising |rows·x - ys|² (normal equations, Gauss-Jordan with partial pivoting).
    ValueError when the columns are not independent (the phases do not tell them apart)."""
    if not rows or len(rows) != len(ys):
        raise ValueError("least squares: need one y per row, and at least one row")
    n = len(rows[0])
    if len(rows) < n:
        raise ValueError(f"least squares: {len(rows)} rows cannot fit {n} unknowns")
    a = [[sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)]
    b = [sum(r[i] * y for r, y in zip(rows, ys, strict=True)) for i in range(n)]
    scale = max(abs(a[i][i]) for i in range(n)) or 1.0
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) <= 1e-12 * scale:
            raise ValueError(f"least squares: column {col} is not determined by the rows")
        a[col], a[pivot] = a[pivot], a[col]
        b[col], b[pivot] = b[pivot], b[col]
        for r in range(n):
            if r != col and a[r][col] != 0.0:
                k = a[r][col] / a[col][col]
                a[r] = [x - k * y for x, y in zip(a[r], a[col], strict=True)]
                b[r] -= k * b[col]
    return [b[i] / a[i][i] for i in range(n)]
