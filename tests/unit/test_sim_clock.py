"""moe_sim.clock: the virtual clock the simulator's timing tests run on, and the real default."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from moe_sim import Engine, SimConfig
from moe_sim.clock import REAL_CLOCK, VirtualClock
from moe_sim.server import SimServer


def test_sleeps_end_in_deadline_order_at_their_deadlines() -> None:
    clock = VirtualClock(start=100.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    async def main() -> None:
        # started in an order unlike their deadlines; 3600 s of virtual time pass in no time
        await asyncio.gather(sleeper("c", 3600.0), sleeper("a", 0.5), sleeper("b", 2.0), sleeper("a2", 0.5))

    clock.run(main())
    assert woke == [("a", 100.5), ("a2", 100.5), ("b", 102.0), ("c", 3700.0)]
    assert clock.wall() - clock.now() == pytest.approx(1_700_000_000.0 - 100.0)


def test_time_stands_still_while_anything_can_run() -> None:
    clock = VirtualClock()

    async def main() -> tuple[float, float]:
        ticker = asyncio.create_task(clock.sleep(0.001))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.05:  # busy for 50 ms of wall time without yielding
            pass
        before = clock.now()
        for _ in range(100):  # tasks ready to run (sleep(0) yields): the timer waits
            await asyncio.sleep(0)
        during = clock.now()
        await ticker
        return before, during

    before, during = clock.run(main())
    assert before == during == 0.0
    assert clock.now() == pytest.approx(0.001)


def test_io_in_flight_holds_time_back() -> None:
    clock = VirtualClock()

    async def handler(_: web.Request) -> web.Response:
        return web.Response(text="x" * 1_000_000)  # many reads and writes over the loopback socket

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", handler)
        timer = asyncio.create_task(clock.sleep(0.01))
        async with TestClient(TestServer(app)) as client:
            for _ in range(5):
                async with client.get("/") as r:
                    assert len(await r.read()) == 1_000_000
            assert clock.now() == 0.0 and not timer.done()
        await timer

    clock.run(main())


def test_a_virtual_clock_refuses_to_sleep_on_another_loop() -> None:
    clock = VirtualClock()
    with pytest.raises(RuntimeError, match="own event loop"):
        asyncio.run(clock.sleep(1.0))


def test_the_simulator_runs_on_the_real_clock_by_default() -> None:
    assert Engine(SimConfig()).clock is REAL_CLOCK
    assert SimServer(SimConfig()).clock is REAL_CLOCK
    clock = VirtualClock()
    e = Engine(SimConfig(), clock)
    assert SimServer(SimConfig(), engine=e).clock is clock
    with pytest.raises(ValueError, match="share one clock"):
        SimServer(SimConfig(), engine=e, clock=VirtualClock())
