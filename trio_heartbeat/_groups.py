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

__all__ = ["leaves", "only", "split_cancelled", "unwrap"]


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


def only(
    exc: BaseException, kinds: tuple[type[BaseException], ...]
) -> BaseException | None:
    """If ``exc`` (through any nesting of groups) holds nothing but ``kinds``,
    the most telling of them (the earliest kind listed that is present);
    else None."""
    found = leaves(exc)
    if not found or not all(isinstance(leaf, kinds) for leaf in found):
        return None
    for kind in kinds:
        for leaf in found:
            if isinstance(leaf, kind):
                return leaf
    return found[0]  # pragma: no cover - every leaf is of some kind
