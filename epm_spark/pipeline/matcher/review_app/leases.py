"""Short leases on queue pairs, so two reviewers are never shown the same pair at the same time.

Leases live in the memory of the one server process, behind a lock: the page is a local tool
that one ``epm-spark review serve`` serves to a few people. They only decide who *sees* which
pair; whether a verdict lands is decided by the rationales table itself (a verdict on a pair a
person already decided is refused, and concurrent commits are retried on the Delta version they
were based on; see :mod:`.store`). So a second server on the same warehouse can show a pair
twice, but can never record it twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

__all__ = ["Lease", "LeaseBook", "LeaseConflict"]


@dataclass(frozen=True)
class Lease:
    reviewer: str
    expires: float


class LeaseConflict(Exception):
    """The pair is leased to another reviewer."""

    def __init__(self, holder: str, seconds_left: float):
        super().__init__(f"this pair is being reviewed by {holder} (for {max(1, round(seconds_left))} more "
                         "seconds at most); it was not recorded. Take the next pair.")
        self.holder = holder
        self.seconds_left = seconds_left


class LeaseBook:
    """Which reviewer holds which pair, until when; and which pairs each reviewer skipped."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds = float(seconds)
        self.clock = clock
        self._lock = threading.Lock()
        self._leases: dict[Hashable, Lease] = {}
        self._skipped: dict[str, dict[Hashable, float]] = {}
        self._done: dict[Hashable, float] = {}

    def _purge(self, now: float) -> None:
        for key in [k for k, lease in self._leases.items() if lease.expires <= now]:
            del self._leases[key]
        for key in [k for k, until in self._done.items() if until <= now]:
            del self._done[key]

    def assign(self, reviewer: str, keys: Iterable[Hashable]) -> Hashable | None:
        """The pair ``reviewer`` should see now, leased to them: the one they already hold, else the
        first one nobody holds (pairs they skipped last, oldest skip first); ``None`` when none is free."""
        keys = list(keys)
        with self._lock:
            now = self.clock()
            self._purge(now)
            for key in keys:
                lease = self._leases.get(key)
                if lease is not None and lease.reviewer == reviewer:
                    self._leases[key] = Lease(reviewer, now + self.seconds)
                    return key
            skipped = self._skipped.get(reviewer, {})
            order = sorted(range(len(keys)), key=lambda i: (keys[i] in skipped, skipped.get(keys[i], 0.0), i))
            for i in order:
                if keys[i] not in self._leases and keys[i] not in self._done:
                    self._leases[keys[i]] = Lease(reviewer, now + self.seconds)
                    return keys[i]
            return None

    def claim(self, reviewer: str, key: Hashable) -> None:
        """Hold ``key`` for ``reviewer`` while their verdict is written; :class:`LeaseConflict` if another
        reviewer's lease on it has not expired."""
        with self._lock:
            now = self.clock()
            self._purge(now)
            lease = self._leases.get(key)
            if lease is not None and lease.reviewer != reviewer:
                raise LeaseConflict(lease.reviewer, lease.expires - now)
            self._leases[key] = Lease(reviewer, now + self.seconds)

    def release(self, key: Hashable) -> None:
        with self._lock:
            self._leases.pop(key, None)

    def finish(self, key: Hashable) -> None:
        """``key`` was decided: it is given to nobody for a lease's length. A queue read just before the
        verdict's commit still lists it; this keeps such a stale list from handing it out again."""
        with self._lock:
            self._leases.pop(key, None)
            self._done[key] = self.clock() + self.seconds

    def skip(self, reviewer: str, key: Hashable) -> None:
        """``reviewer`` passes on ``key``: it is freed, and comes back to them only after the rest."""
        with self._lock:
            self._leases.pop(key, None)
            self._skipped.setdefault(reviewer, {})[key] = self.clock()

    def held_by_others(self, reviewer: str, keys: Iterable[Hashable]) -> int:
        with self._lock:
            now = self.clock()
            self._purge(now)
            return sum(1 for k in keys if (lease := self._leases.get(k)) is not None and lease.reviewer != reviewer)
