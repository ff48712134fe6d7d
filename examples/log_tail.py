"""Log tail: one fast producer, many fast subscribers and one slow one — and what the overflow
policy does about the slow one.

    python examples/log_tail.py [--policy drop_oldest|block|error] [--lines N] [--fast N]
                                [--slow-delay SECONDS]

The server appends log lines to the ``logs:app`` stream about once a millisecond. ``--fast``
subscribers (five per client connection) keep up; one more subscriber, on its own connection
with a credit window of 4 lines, sleeps ``--slow-delay`` per line. The server keeps at most 32
lines per subscription beyond the subscriber's credit, so the slow one overflows. The fast
subscriptions take the channel's default policy (drop_oldest, never needed); the slow one asks
for ``--policy`` when it subscribes, and that decides what happens:

- ``drop_oldest``: the server drops the oldest queued lines and tells the slow subscriber
  exactly which seqs it lost (``Gap`` items); the fast ones see every line.
- ``block``: the producer's ``await write`` waits for the slow subscriber, so everyone gets
  every line, at the slow one's pace.
- ``error``: the slow subscription fails with RESOURCE_EXHAUSTED; the others carry on.

Under every policy the server's send queues stay bounded: the summary shows the peak.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import time
from typing import Any

from streamproto import ChannelOptions, Config, OverflowPolicy, code_name
from transports import Gap, StreamError, new_hub
from transports import asyncio as sp

CHANNEL, STREAM = "logs:app", "app"
SLOW_WINDOW = 4  # the slow subscriber's credit window, in lines
QUEUE_LINES = 32  # lines the server queues per subscription beyond the subscriber's credit
PER_CONNECTION = 5  # fast subscriptions share client connections, five to a connection
LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")


def log_line(seq: int) -> bytes:
    level = LEVELS[seq % len(LEVELS)]
    return f"{seq:06d} {level:<5} worker-{seq % 7} handled request #{seq * 37 % 1000:03d}".encode()


async def produce(producer: sp.ServerProducer, lines: int) -> float:
    """Append ``lines`` log lines, about one a millisecond; returns the seconds it took."""
    start = time.monotonic()
    for seq in range(1, lines + 1):
        await producer.write(log_line(seq))  # waits only for a BLOCK subscriber
        await asyncio.sleep(0.001)
    producer.close()
    return time.monotonic() - start


async def tail(sub: sp.Subscription, delay: float = 0.0) -> dict[str, Any]:
    """Read a subscription to its end: the seqs received, the gaps, and the error if any."""
    seqs: list[int] = []
    gaps: list[tuple[int, int]] = []
    error = None
    try:
        async for item in sub:
            if isinstance(item, Gap):  # seqs item.from_seq..item.to_seq will never arrive
                gaps.append((item.from_seq, item.to_seq))
                continue
            seqs.append(sub.seq)
            if delay:
                await asyncio.sleep(delay)
    except StreamError as exc:
        error = code_name(exc.code)
    return {"seqs": seqs, "gaps": gaps, "error": error}


async def watch_queues(server: sp.Server, peak: list[int]) -> None:
    """Sample the bytes every server connection holds queued for its subscribers (the
    server's public statistics: ``server.statistics().connections``)."""
    while True:
        for info in server.statistics().connections:
            peak[0] = max(peak[0], info.connection.queued_bytes)
        await asyncio.sleep(0.002)


async def main(
    policy: str = "drop_oldest",
    lines: int = 500,
    fast: int = 20,
    slow_delay: float = 0.005,
    quiet: bool = False,
) -> dict[str, Any]:
    say = (lambda *a: None) if quiet else print
    hub = new_hub()  # time.monotonic and 128-bit random ids
    async with contextlib.AsyncExitStack() as stack:  # closes clients, then the server
        server_config = Config(max_queued_chunks=QUEUE_LINES)
        server = await stack.enter_async_context(
            await sp.serve(hub, "tcp://127.0.0.1:0", config=server_config)
        )
        # Subscriptions that ask for no policy get the channel's: the fast ones below.
        server.channel(CHANNEL, ChannelOptions(default_policy=OverflowPolicy.DROP_OLDEST))
        producer = server.producer(CHANNEL, STREAM)

        fast_subs = []
        for i in range(fast):
            if i % PER_CONNECTION == 0:
                client = await stack.enter_async_context(await sp.connect(server.address))
            fast_subs.append(client.subscribe(CHANNEL, STREAM, on_gap="item"))
        # The slow subscriber grants 4 lines of credit at a time and asks for its own policy.
        slow_client = await stack.enter_async_context(
            await sp.connect(server.address, config=Config(window_chunks=SLOW_WINDOW))
        )
        slow_policy = OverflowPolicy[policy.upper()]
        slow_sub = slow_client.subscribe(CHANNEL, STREAM, policy=slow_policy, on_gap="item")
        for sub in [*fast_subs, slow_sub]:
            await sub.accepted()
        say(f"{fast} fast subscribers and 1 slow one ({policy}) tail {CHANNEL}/{STREAM}")

        peak = [0]
        watcher = asyncio.ensure_future(watch_queues(server, peak))
        readers = [asyncio.ensure_future(tail(sub)) for sub in fast_subs]
        slow_reader = asyncio.ensure_future(tail(slow_sub, slow_delay))
        produce_seconds = await produce(producer, lines)
        fast_results = await asyncio.gather(*readers)
        slow = await slow_reader
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        overflows = slow_client.statistics().overflows

    line_bytes = max(len(log_line(seq)) for seq in range(1, lines + 1))
    bound = (SLOW_WINDOW + QUEUE_LINES) * line_bytes
    lost = sum(to - first + 1 for first, to in slow["gaps"])
    say(f"producer wrote {lines} lines in {produce_seconds:.2f}s")
    counts = "/".join(map(str, sorted({len(r["seqs"]) for r in fast_results})))
    say(f"fast subscribers: {fast} x {counts} lines, no gaps")
    say(f"slow subscriber:  {len(slow['seqs'])} lines, {len(slow['gaps'])} Gap items ({lost} lost)")
    if slow["gaps"]:
        runs = merge(slow["gaps"])
        shown = ", ".join(f"{first}..{to}" for first, to in runs[:6])
        say(f"  lines lost: {shown}{', ...' if len(runs) > 6 else ''}")
    if slow["error"]:
        say(f"  the slow subscription failed: {slow['error']}")
    say(f"overflow warnings at the slow client: {overflows}")
    say(
        f"peak bytes queued on a server connection: {peak[0]} "
        f"(bound for the slow one: ({SLOW_WINDOW} + {QUEUE_LINES}) lines x {line_bytes} B = "
        f"{bound} B)"
    )
    return {
        "policy": policy,
        "lines": lines,
        "fast": [len(r["seqs"]) for r in fast_results],
        "fast_complete": all(r["seqs"] == list(range(1, lines + 1)) for r in fast_results),
        "fast_gaps": sum(len(r["gaps"]) for r in fast_results),
        "slow_seqs": slow["seqs"],
        "slow_gaps": slow["gaps"],
        "slow_error": slow["error"],
        "slow_overflows": overflows,
        "produce_seconds": produce_seconds,
        "peak_queued_bytes": peak[0],
        "queue_bound": bound,
    }


def merge(gaps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Adjacent gaps as runs, for display (one Gap item per GAP frame the server sent)."""
    runs: list[tuple[int, int]] = []
    for first, to in gaps:
        if runs and runs[-1][1] + 1 == first:
            runs[-1] = (runs[-1][0], to)
        else:
            runs.append((first, to))
    return runs


def covered(result: dict[str, Any]) -> list[int]:
    """Every seq the slow subscriber accounted for: received or reported lost, in order."""
    gap_seqs = (range(first, to + 1) for first, to in result["slow_gaps"])
    return sorted([*result["slow_seqs"], *itertools.chain.from_iterable(gap_seqs)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--policy", choices=["drop_oldest", "block", "error"], default="drop_oldest"
    )
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--fast", type=int, default=20)
    parser.add_argument("--slow-delay", type=float, default=0.005)
    args = parser.parse_args()
    asyncio.run(main(args.policy, args.lines, args.fast, args.slow_delay))
