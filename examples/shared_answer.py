"""Run or join: two tabs ask for the same answer, and one producer serves both.

    python examples/shared_answer.py [--transport tcp|ws] [--tokens N]

The answer has an id the application derives from the question (here ``answer-42``). Each
tab opens ``llm:answers`` with that id and ``join=True``: the first OPEN starts the producer,
the second finds it running and joins it from its first token instead of failing with
STREAM_EXISTS, so the model runs once. ``subscription.joined`` tells each tab which happened.
An OPEN's own stream is lossless by default, so both tabs get every token. Then a status
query tells whether the answer is done, without subscribing to it.
"""

from __future__ import annotations

import argparse
import asyncio

from transports import asyncio as sp
from transports import new_hub

ANSWER_ID = "answer-42"


async def main(transport: str, tokens: int, quiet: bool = False) -> dict[str, object]:
    say = (lambda *a: None) if quiet else print
    runs: list[bytes] = []

    async def answer(producer: sp.ServerProducer, prompt: bytes) -> None:
        runs.append(prompt)  # the model runs once per answer id
        for i in range(tokens):
            await producer.write(b"token-%d " % i)
            await asyncio.sleep(0.002)
        producer.close()

    url = "ws://127.0.0.1:0/streamproto" if transport == "ws" else "tcp://127.0.0.1:0"
    server = await sp.serve(new_hub(), url)
    server.channel("llm:answers", on_open=answer)
    tabs = [await sp.connect(server.address) for _ in range(2)]

    async def tab(n: int, delay: float) -> tuple[bool, list[bytes]]:
        await asyncio.sleep(delay)  # the second tab asks a little later
        stream = tabs[n].open("llm:answers", b"what is 6 x 7?", stream_id=ANSWER_ID, join=True)
        got = [token async for token in stream]
        say(
            f"tab {n + 1}: {'joined' if stream.joined else 'started'} the answer, {len(got)} tokens"
        )
        return stream.joined, got

    (joined1, got1), (joined2, got2) = await asyncio.gather(tab(0, 0.0), tab(1, 0.02))
    say(f"the model ran {len(runs)} time(s); both tabs got the same {len(got1)} tokens")
    # A third tab only wants to know whether the answer is ready: no subscription needed.
    entry = await tabs[0].status("llm:answers", ANSWER_ID)
    say(f"status of {ANSWER_ID}: {entry.state.name}, {entry.last_seq} tokens")
    for client in tabs:
        await client.close()
    await server.shutdown(timeout=1.0)
    return {
        "runs": len(runs),
        "joined": [joined1, joined2],
        "tabs": [got1, got2],
        "status": (entry.state.name, entry.last_seq),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["tcp", "ws"], default="tcp")
    parser.add_argument("--tokens", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.transport, args.tokens))
