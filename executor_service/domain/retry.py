"""Retry delays: exponential backoff with full jitter, honouring ``Retry-After``.

"Exponential Backoff And Jitter" (Marc Brooker, AWS Architecture Blog, 2015): the n-th retry
waits a uniform random time in ``[0, min(max_backoff, initial * multiplier**(n-1))]``. A
server's ``Retry-After`` (RFC 9110 §10.2.3) is a lower bound on the wait.
"""

from __future__ import annotations

from collections.abc import Callable

from shared_schemas import RetryPolicy


def backoff_s(policy: RetryPolicy, failed_attempt: int, rand: Callable[[], float]) -> float:
    """Delay in seconds before the attempt after ``failed_attempt`` (1-based).

    ``rand`` returns a float in [0, 1); pass ``random.random`` (or a fixed value in tests).
    """
    ceiling = min(
        policy.max_backoff_s, policy.initial_backoff_s * policy.multiplier ** (failed_attempt - 1)
    )
    return ceiling * rand() if policy.jitter == "full" else ceiling


def retry_delay_s(
    policy: RetryPolicy,
    failed_attempt: int,
    retry_after_s: float | None,
    rand: Callable[[], float],
) -> float | None:
    """Seconds to wait before retrying, or None when ``max_attempts`` is used up."""
    if failed_attempt >= policy.max_attempts:
        return None
    delay = backoff_s(policy, failed_attempt, rand)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay
