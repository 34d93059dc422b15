"""The deadline that any traffic pushes forward: a cancel-scope watchdog."""

from __future__ import annotations

import math
from types import TracebackType

import trio

__all__ = ["IdleWatchdog", "idle_timeout"]


class IdleWatchdog:
    """A cancel scope that fires after ``timeout`` seconds without :meth:`touch`.

    Use it as a context manager around the work that must stop when the peer
    goes silent; call :meth:`touch` whenever traffic arrives. A touch only moves
    the scope's deadline: there is no timer task and no polling, so an idle
    connection costs nothing until its deadline. After the block,
    :attr:`fired` says whether the deadline was what ended it.

    With ``enabled=False`` the deadline stays at infinity and :meth:`touch` does
    nothing, for debugging sessions where a paused peer must not be dropped.
    """

    __slots__ = ("_scope", "enabled", "timeout")

    def __init__(self, timeout: float, *, enabled: bool = True) -> None:
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number, not {timeout!r}")
        self.timeout = timeout
        self.enabled = enabled
        self._scope = trio.CancelScope()

    def __enter__(self) -> IdleWatchdog:
        self._scope.__enter__()
        self.touch()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        return self._scope.__exit__(exc_type, exc_value, traceback)

    def touch(self) -> None:
        """Push the deadline to now + ``timeout``."""
        if self.enabled:
            self._scope.deadline = trio.current_time() + self.timeout

    @property
    def deadline(self) -> float:
        """When the watchdog fires unless touched again (``inf`` if disabled)."""
        return self._scope.deadline

    @property
    def fired(self) -> bool:
        """Whether the block ended because the deadline passed."""
        return self._scope.cancelled_caught


def idle_timeout(timeout: float, *, enabled: bool = True) -> IdleWatchdog:
    """Return an :class:`IdleWatchdog`; use it as ``with idle_timeout(60) as w:``."""
    return IdleWatchdog(timeout, enabled=enabled)
