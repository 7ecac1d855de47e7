"""Log-in throttling: waits that grow with failed log-ins and shrink with time.

Failures are counted under two keys per attempt, the account named (whether or not it
exists, so a refusal says nothing about which names are real) and the client address (an
IPv6 address counts as its /64, which one machine usually owns whole):

* attempts spread over many addresses against one account meet the account's count;
* one address trying many accounts meets the address's count.

A key's ``score`` is its number of failures, halved every ``half_life_s`` seconds. While a
score is below ``free_failures`` attempts are answered at once; from there on, after each
failure the key waits ``base_delay_s * 2 ** (score - free_failures)`` seconds (at most
``max_delay_s``) before the next attempt is even looked at. An attempt that arrives while
either key waits is refused with the seconds left, without checking the password and
without counting. There is no permanent lockout: waits are capped and scores decay.

Every admitted attempt is counted as a failure *before* the password is checked, in one
short transaction that locks the keys' rows, and taken back when the password was right:
a burst of parallel guesses, or guesses spread over several server processes on one
database, therefore never gets more than the free attempts past the check. A successful
log-in clears the account's count; the address's keeps its earlier failures (else one valid
account would let an attacker wash their address clean between guesses at others).

The state lives in the ``login_throttle`` table, so it survives a restart and every server
process on the database sees it.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from clowder_ml.db.models import LoginThrottle, utcnow
from clowder_ml.settings import Settings

ACCOUNT_PREFIX = "account:"
ADDRESS_PREFIX = "address:"
# A score this small is as good as none: its row may go.
NEGLIGIBLE = 0.01


@dataclass(frozen=True)
class Policy:
    """How one kind of key (accounts or addresses) is throttled."""

    free_failures: int
    base_delay_s: float
    max_delay_s: float
    half_life_s: float

    def decayed(self, score: float, elapsed_s: float) -> float:
        """``score`` after ``elapsed_s`` seconds of decay."""
        return float(score * 0.5 ** (max(0.0, elapsed_s) / self.half_life_s))

    def wait_s(self, score: float) -> float:
        """The wait after the failure that brought the key to ``score``.

        The count is rounded so that the wait starts with the ``free_failures``-th failure
        even though the earlier ones have decayed a little meanwhile.
        """
        if round(score) < self.free_failures:
            return 0.0
        exponent = max(0.0, score - self.free_failures)
        # 2**exponent overflows for absurd scores; the cap applies long before.
        if exponent > 60:
            return self.max_delay_s
        return float(min(self.max_delay_s, self.base_delay_s * 2.0 ** exponent))

    def blocked_until(self, row: LoginThrottle) -> datetime:
        return row.updated_at + timedelta(seconds=self.wait_s(row.score))


def account_key(username: str) -> str:
    """The key counting failures for the account named ``username`` (case-insensitive)."""
    return ACCOUNT_PREFIX + username.strip().lower()[:64]


def address_key(client: str | None) -> str:
    """The key counting failures from ``client`` (an IPv6 address counts as its /64)."""
    if not client:
        return ADDRESS_PREFIX + "unknown"
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return ADDRESS_PREFIX + client[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ADDRESS_PREFIX + str(ip.ipv4_mapped)
        return ADDRESS_PREFIX + str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return ADDRESS_PREFIX + str(ip)


@dataclass(frozen=True)
class Throttle:
    """The log-in throttle: one policy for accounts, one for client addresses."""

    account: Policy
    address: Policy

    @classmethod
    def from_settings(cls, settings: Settings) -> Throttle:
        def policy(free: int) -> Policy:
            return Policy(free, settings.login_base_delay_s, settings.login_max_delay_s,
                          settings.login_half_life_s)
        return cls(policy(settings.login_account_free_failures),
                   policy(settings.login_address_free_failures))

    def _policies(self, username: str, client: str | None) -> dict[str, Policy]:
        return {account_key(username): self.account, address_key(client): self.address}

    def admit(self, s: Session, username: str, client: str | None,
              now: datetime | None = None) -> float | None:
        """Look at an attempt to log in as ``username`` from ``client``.

        Returns the seconds to wait when either key is waiting (nothing is counted), else
        counts the attempt as a failure and returns None; call :meth:`succeeded` when the
        password turns out right. Commit the session before checking the password, so that
        parallel attempts see this one.
        """
        now = now or utcnow()
        policies = self._policies(username, client)
        # Read without locks first: under attack most attempts are refused here, and a
        # refusal then writes nothing to the throttle.
        rows = s.scalars(select(LoginThrottle).where(LoginThrottle.key.in_(policies))).all()
        wait = _longest_wait(rows, policies, now)
        if wait is not None:
            return wait
        rows = _lock(s, sorted(policies), now)
        wait = _longest_wait(rows, policies, now)  # another attempt may have won the race
        if wait is not None:
            return wait
        for row in rows:
            policy = policies[row.key]
            row.score = policy.decayed(row.score, (now - row.updated_at).total_seconds()) + 1
            row.updated_at = now
        return None

    def succeeded(self, s: Session, username: str, client: str | None,
                  now: datetime | None = None) -> None:
        """The attempt :meth:`admit` counted had the right password: clear the account's
        failures and take this attempt back from the address's."""
        now = now or utcnow()
        s.execute(delete(LoginThrottle).where(LoginThrottle.key == account_key(username)))
        key = address_key(client)
        row = _lock(s, [key], now)[0]
        score = self.address.decayed(row.score, (now - row.updated_at).total_seconds()) - 1
        if score < NEGLIGIBLE:
            s.delete(row)
        else:
            row.score, row.updated_at = score, now

    def clear_account(self, s: Session, username: str) -> bool:
        """Forget the account's failures (an administrator's unlock). True if it had any."""
        result = s.execute(delete(LoginThrottle)
                           .where(LoginThrottle.key == account_key(username)))
        return bool(getattr(result, "rowcount", 0))

    def prune(self, s: Session, now: datetime | None = None) -> int:
        """Delete keys whose failures have decayed to nothing; returns how many."""
        now = now or utcnow()
        # After 10 half-lives a score is below a thousandth of what it was: any row not
        # touched for that long is negligible (scores beyond ~10 come only from attacks that
        # the cap on waits already limits).
        longest = max(self.account.half_life_s, self.address.half_life_s) * 10
        result = s.execute(delete(LoginThrottle).where(
            LoginThrottle.updated_at < now - timedelta(seconds=longest)))
        return int(getattr(result, "rowcount", 0) or 0)


def _longest_wait(rows: Sequence[LoginThrottle], policies: dict[str, Policy], now: datetime,
                  ) -> float | None:
    # ``now`` may precede a failure another process wrote meanwhile: a wait is never longer
    # than the one that failure started.
    waits = [(policies[row.key].blocked_until(row) - max(now, row.updated_at)).total_seconds()
             for row in rows]
    longest = max(waits, default=0.0)
    return longest if longest > 0 else None


def _lock(s: Session, keys: list[str], now: datetime) -> list[LoginThrottle]:
    """The rows of ``keys`` (created when missing), locked until the transaction ends.

    PostgreSQL locks the rows (``FOR UPDATE``, in key order so two attempts cannot
    deadlock); on SQLite the first write takes the database's one write lock.
    """
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    for key in keys:
        s.execute(insert(LoginThrottle).values(key=key, score=0.0, updated_at=now)
                  .on_conflict_do_nothing(index_elements=["key"]))
    stmt = (select(LoginThrottle).where(LoginThrottle.key.in_(keys))
            .order_by(LoginThrottle.key).with_for_update()
            .execution_options(populate_existing=True))
    return list(s.scalars(stmt))


def retry_after_s(wait_s: float) -> int:
    """Whole seconds for ``Retry-After``: rounded up, so a client waiting that long is let in."""
    return max(1, math.ceil(wait_s))
