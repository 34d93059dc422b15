"""Exception groups: what a nursery wraps, sorted out for callers.

A nursery wraps even a single exception in a group; Trio code that promises "this
raises ConnectionClosed" must unwrap it, and code that must re-raise
cancellation must find it inside a group.
"""

from __future__ import annotations

import sys

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["leaves", "split_cancelled", "unwrap"]


def unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside ``group`` (through nested groups), or the group."""
    only = leaves(group)
    return only[0] if len(only) == 1 else group


def leaves(exc: BaseException) -> list[BaseException]:
    """Every exception inside ``exc``, through any nesting of groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def split_cancelled(exc: BaseException) -> tuple[bool, BaseException | None]:
    """Return (contained Cancelled, the rest) of a possibly grouped exception."""
    if isinstance(exc, trio.Cancelled):
        return True, None
    if isinstance(exc, BaseExceptionGroup):
        cancelled, rest = exc.split(trio.Cancelled)
        return cancelled is not None, rest
    return False, exc
