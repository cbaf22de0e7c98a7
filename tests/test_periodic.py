"""bridge/periodic.py: a round at start and on each kick; a failed round is handed to
``on_error`` and the loop goes on; with ``is_leader``, rounds run only while leading."""

from __future__ import annotations

import asyncio

from bridge.periodic import Periodic


async def _until(check, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def test_a_failed_round_is_reported_and_the_next_one_runs() -> None:
    rounds: list[int] = []
    errors: list[str] = []

    async def round_() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("store down")

    async def main() -> None:
        p = Periodic("test", 3600, round_, on_error=lambda exc: errors.append(str(exc)))
        p.start()
        await _until(lambda: errors == ["store down"])
        p.kick()  # long before the interval: only the kick can run the second round
        await _until(lambda: len(rounds) == 2)
        await p.stop()

    asyncio.run(main())
    assert rounds == [0, 1] and errors == ["store down"]


def test_rounds_run_only_while_leading() -> None:
    leading = False
    asked: list[bool] = []
    rounds: list[bool] = []

    def is_leader() -> bool:
        asked.append(leading)
        return leading

    async def round_() -> None:
        rounds.append(True)

    async def main() -> None:
        nonlocal leading
        p = Periodic("test", 3600, round_, on_error=lambda exc: None, is_leader=is_leader)
        p.start()
        await _until(lambda: asked == [False])  # the start round asked, and ran nothing
        assert rounds == []
        leading = True
        p.kick()
        await _until(lambda: rounds == [True])
        await p.stop()

    asyncio.run(main())
    assert asked == [False, True]
