"""Time for the rig simulator (engine, server, PD roles): the real clock, or a virtual one for tests.

The simulator reads time and sleeps only through a `Clock`. The default, `REAL_CLOCK`, is wall time: what the rig's
pods (`python -m moe_sim` under kwok) and the pod runner use, and what the operator scrapes.

`VirtualClock` is for tests. The simulator's answers depend on time (a token is due 1/decode_tps s after the last
one; a stream yields the tokens due when its generator wakes up, coalescing the late ones), so on wall time a busy
machine changes what a test observes. `VirtualClock.run(main)` runs `main` on an event loop whose time IS this clock:
while anything can run (a callback is ready, a socket is readable or writable) time stands still, and once nothing
can, the clock jumps to the earliest timer instead of waiting for it. Sleeps therefore end in deadline order, each at
its deadline, and everything due at one instant runs before time moves on: a test sees the same sequence of events
however slow the machine is (it only takes longer in wall time). asyncio's own timers (`asyncio.sleep`,
`asyncio.wait_for`, aiohttp's timeouts) run on the same virtual time.

Limit: work outside the loop (a thread, another process) does not hold virtual time back; the loop jumps to its next
timer while such work is pending. Host names are resolved in a thread, so tests connect to IP literals (aiohttp's
test server binds 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

T = TypeVar("T")


class Clock:
    """Real time: `now()` monotonic seconds (durations, deadlines), `wall()` seconds since the epoch (timestamps in
    API answers), `sleep()` asyncio's timers (the event loop's clock is monotonic time too)."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


REAL_CLOCK = Clock()


class VirtualClock(Clock):
    """Deterministic time for tests (module docstring): run the code under test with `run()`; `now()` starts at
    `start`, `wall()` at `wall_start`, and both advance only when the loop has nothing to run."""

    def __init__(self, start: float = 0.0, wall_start: float = 1_700_000_000.0):
        self._t = float(start)
        self._wall_offset = wall_start - self._t
        self._loop: asyncio.AbstractEventLoop | None = None

    def now(self) -> float:
        return self._t

    def wall(self) -> float:
        return self._wall_offset + self._t

    async def sleep(self, seconds: float) -> None:
        # on any other loop the sleep would run on wall time while now() stood still
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError("a VirtualClock sleeps only on its own event loop (VirtualClock.run)")
        await asyncio.sleep(seconds)

    def _advance(self, seconds: float) -> None:
        self._t += seconds

    def new_loop(self) -> asyncio.AbstractEventLoop:
        """An event loop on this clock's time (one at a time: sleep() checks it is the running loop)."""
        loop = _VirtualTimeLoop(self)
        self._loop = loop
        return loop

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """asyncio.run(main) on this clock's time. It leaves the thread's current event loop alone, so it can be
        called from a synchronous test while pytest-asyncio keeps its own loop."""
        with asyncio.Runner(loop_factory=self.new_loop) as runner:
            return runner.run(main)


class _JumpingSelector(selectors.BaseSelector):
    """The real selector, except that a wait for a timer (the loop passes the time left to its earliest timer as
    the timeout) polls once and, if no file is ready, advances the clock by that timeout instead of blocking. With no
    timer (timeout None) it blocks for real: only I/O or another thread (call_soon_threadsafe) can wake the loop."""

    def __init__(self, clock: VirtualClock):
        self._inner = selectors.DefaultSelector()
        self._clock = clock

    def register(self, fileobj: FileDescriptorLike, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: FileDescriptorLike, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:
            return self._inner.select(timeout)
        ready = self._inner.select(0)
        if not ready:
            self._clock._advance(timeout)
        return ready

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop with the clock's time: timers are scheduled and fired against `clock.now()`."""

    def __init__(self, clock: VirtualClock):
        super().__init__(_JumpingSelector(clock))
        self._virtual_clock = clock

    def time(self) -> float:
        return self._virtual_clock.now()


__all__ = ["REAL_CLOCK", "Clock", "VirtualClock"]
