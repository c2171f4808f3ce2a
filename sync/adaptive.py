"""Adaptive polling (issue 16, item 3): when to poll one connection next. Pure: numbers in,
an interval out; the daemon (``sync.daemon.AdaptivePoller``) does the waiting and the polling.

A quiet incremental poll of a change feed or sorted scan costs about one request, so polling
often is cheap — but not free, and a platform's documented limit is shared with the writes and
with every other client of the account. The policy:

* **changes seen** → poll again soon: the interval drops straight to its floor;
* **nothing changed** → back off: the interval grows by ``backoff`` (×2) up to ``max_interval_s``;
* **the floor** is the larger of ``min_interval_s`` and what keeps polling under
  ``max_budget_share`` of every known limit: with a poll costing ``cost`` requests (learnt: a
  moving average of the requests recent polls took) and a limit of ``R`` requests per ``W``
  seconds, one poll every ``cost / (share × R / W)`` seconds spends exactly that share. The
  limits are the documented burst limit, the daily budget, and — when the platform reports it —
  what is left of today's budget spread over the time to its reset (so a connection that spent
  much of its day on writes polls more slowly, never into a pause). The share wins over
  ``max_interval_s``: a floor above it is kept;
* **no documented limit** (Acquire: a full scan of every page each poll) → the share bounds
  time instead: a poll taking ``busy`` seconds (learnt like the cost) is repeated at most every
  ``busy / max_budget_share`` seconds, so polling never keeps the platform (nor our process)
  busy more than that share of the time;
* **activity seen another way** (a webhook of that platform, :meth:`AdaptivePolicy.nudge`) →
  back to the floor too: deliveries can be lost, and polling is what finds the lost ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limit:
    """A request budget: ``requests`` per ``per_seconds``."""

    requests: float
    per_seconds: float

    @property
    def per_second(self) -> float:
        return self.requests / self.per_seconds if self.per_seconds > 0 else float("inf")


@dataclass
class AdaptivePolicy:
    """The poll interval of one connection (see the module doc)."""

    min_interval_s: float = 5.0
    max_interval_s: float = 300.0
    max_budget_share: float = 0.2
    limits: tuple[Limit, ...] = ()
    backoff: float = 2.0
    cost_weight: float = 0.3  # weight of the newest poll in the cost's moving average
    cost: float = 1.0  # requests one poll takes (learnt)
    interval: float = field(default=0.0)
    remaining: Limit | None = None  # today's budget left over the time to its reset
    busy: float = 0.0  # seconds one poll takes (learnt; bounds polling where no limit is known)

    def __post_init__(self) -> None:
        if not 0 < self.max_budget_share <= 1:
            raise ValueError("max_budget_share must be in (0, 1]")
        if self.min_interval_s <= 0 or self.max_interval_s < self.min_interval_s:
            raise ValueError("0 < min_interval_s <= max_interval_s")
        self.interval = self.interval or self.floor()

    def floor(self) -> float:
        """The shortest interval allowed now: ``min_interval_s``, or longer to keep polling
        under the share of every limit."""
        floor = self.min_interval_s
        for limit in (*self.limits, *((self.remaining,) if self.remaining else ())):
            rate = limit.per_second * self.max_budget_share
            floor = max(floor, self.cost / rate if rate > 0 else float("inf"))
        if not self.limits and self.busy > 0:
            floor = max(floor, self.busy / self.max_budget_share)
        return floor

    def nudge(self) -> float:
        """Activity seen another way (a webhook): poll at the floor again; the interval."""
        self.interval = self.floor()
        return self.interval

    def observe(
        self,
        changes: int,
        requests: int,
        *,
        daily_remaining: int | None = None,
        seconds_to_reset: float | None = None,
        seconds: float | None = None,
    ) -> float:
        """Fold one poll's outcome in (``changes`` records changed, ``requests`` it took, what
        the platform said is left of today's budget, and how many ``seconds`` it took) and
        return the next interval."""
        self.cost = (1 - self.cost_weight) * self.cost + self.cost_weight * max(1, requests)
        if seconds is not None:
            w = self.cost_weight if self.busy else 1.0
            self.busy = (1 - w) * self.busy + w * max(0.0, seconds)
        if daily_remaining is not None and seconds_to_reset:
            self.remaining = Limit(max(0, daily_remaining), max(1.0, seconds_to_reset))
        floor = self.floor()
        if changes > 0:
            self.interval = floor
        else:
            self.interval = max(floor, min(self.max_interval_s, self.interval * self.backoff))
        return self.interval

    def polls_per_second(self) -> float:
        """Requests per second polling spends at the current interval."""
        return self.cost / self.interval
