"""``dag_run_budget_usd`` across task instances running at once: claims on the run's shared store.

Each task instance publishes a *claim* (the most it may spend: what it spent, at most, plus what it
holds for requests in flight and a small lease for the next ones) before it sends. It then reads
every other instance's claim; if the sum passes the budget it withdraws and tries again after a
short random wait (another instance may be withdrawing too), and refuses once nothing is pending.
Publish-then-read on a linearizable store means of two instances claiming at once at least one sees
the other, so claims that both succeed always fit together: the run never passes its budget.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from airflow_provider_qwen.client.pricing import usd_text

CLAIM_ATTEMPTS = 8
CLAIM_WAIT_S = (0.05, 0.5)  # random wait between two attempts


@dataclass(frozen=True)
class Hold:
    """One task instance's published claim and what it has spent at most within it."""

    instance: str  # "task_id[map_index]"
    claimed_usd: Decimal
    at_most_usd: Decimal

    @property
    def counted_usd(self) -> Decimal:
        """What the run counts for it: its claim, never less than what it spent, never negative."""
        return max(self.claimed_usd, self.at_most_usd, Decimal(0))

    @property
    def pending(self) -> bool:
        """Whether part of the claim is for requests not yet settled (it may shrink soon)."""
        return self.claimed_usd > self.at_most_usd


class HoldStore(Protocol):
    """The run's shared record of claims: the Airflow side keeps it in XCom."""

    def publish(self, hold: Hold) -> None: ...

    def others(self) -> list[Hold]: ...


class RunShare:
    """This task instance's share of the run budget: claims grow in leases, settle at the end."""

    def __init__(
        self,
        budget_usd: Decimal,
        store: HoldStore,
        instance: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.budget_usd = budget_usd
        self.store = store
        self.instance = instance
        self.claimed_usd = Decimal(0)
        self._sleep = sleep
        self._lock = threading.Lock()

    def ensure(self, need_usd: Decimal, lease_usd: Decimal, at_most_usd: Decimal) -> str | None:
        """Make the claim cover ``need_usd`` (plus up to ``lease_usd`` more, where it fits).

        Returns None once claimed, or why it cannot be: the budget would be passed.
        """
        with self._lock:
            if need_usd <= self.claimed_usd:
                return None
            others: list[Hold] = []
            for attempt in range(CLAIM_ATTEMPTS):
                others = self.store.others()
                room = self.budget_usd - _claimed(others)
                if need_usd <= room:
                    claim = min(room, need_usd + lease_usd)
                    self.store.publish(Hold(self.instance, claim, at_most_usd))
                    others = self.store.others()
                    if _claimed(others) + claim <= self.budget_usd:
                        self.claimed_usd = claim
                        return None
                    withdrawn = max(self.claimed_usd, at_most_usd)  # never below what was spent
                    self.store.publish(Hold(self.instance, withdrawn, at_most_usd))
                if not any(h.pending for h in others) or attempt == CLAIM_ATTEMPTS - 1:
                    break
                self._sleep(random.uniform(*CLAIM_WAIT_S))
            held_by_others = sum((h.counted_usd - max(h.at_most_usd, Decimal(0)) for h in others), Decimal(0))
            spent_by_others = sum((max(h.at_most_usd, Decimal(0)) for h in others), Decimal(0))
            return f"{usd_text(spent_by_others)} USD spent at most by the run's other task instances" + (
                f", {usd_text(held_by_others)} USD held by their requests in flight" if held_by_others else ""
            )

    def settle(self, at_most_usd: Decimal) -> None:
        """Shrink the claim to what was spent at most (the end of the try): others may use the rest."""
        with self._lock:
            self.claimed_usd = at_most_usd
            self.store.publish(Hold(self.instance, at_most_usd, at_most_usd))


def _claimed(holds: list[Hold]) -> Decimal:
    return sum((h.counted_usd for h in holds), Decimal(0))
