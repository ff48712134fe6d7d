"""An AI-chat page over HTTP: POST a prompt, stream the answer's tokens, reload mid-answer and
continue where it stopped.

    python examples/chat_app.py            # then open the URL it prints

A Starlette app with an ordinary route (the page, ``/``) and streamproto's ASGI app mounted at
``/streams`` (``transports.asgi.StreamApp``), run by uvicorn. The page POSTs the prompt to
``/streams/chat:answers`` and reads the SSE body with ``fetch``; it keeps the ``Stream-Id``
header and the last event id in ``localStorage``, so after a reload it resumes with
``EventSource("/streams/chat:answers/<id>?after_seq=<last>")``: no token twice, none lost
(EventSource itself reconnects with ``Last-Event-ID`` if the connection drops; the ``end``
event closes it, and a reconnect after the end, whose id is ``<last>:end``, is answered ``204``).
"""

from __future__ import annotations

import argparse
import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from streamproto import ChannelOptions, Window
from transports.asgi import StreamApp
from transports.asyncio import ServerProducer

#: Seconds between tokens: slow enough to reload the page mid-answer.
TOKEN_DELAY = 0.15

streams = StreamApp()


async def answer(producer: ServerProducer, prompt: bytes) -> None:
    """The "model": echoes the prompt back word by word, then a closing line."""
    words = prompt.decode(errors="replace").split() or ["(empty", "prompt)"]
    for word in [*words, "—", "that", "is", "what", "you", "said."]:
        if producer.aborted.is_set():
            return
        await producer.write((word + " ").encode())
        await asyncio.sleep(TOKEN_DELAY)
    producer.close()


streams.channel(
    "chat:answers",
    # A whole answer stays replayable for ten minutes after it ends.
    ChannelOptions(replay=Window(chunks=10_000, nbytes=1 << 20), retention=600.0),
    on_open=answer,
)

PAGE = """<!doctype html>
<meta charset="utf-8"><title>streamproto chat</title>
<form id="f"><input id="q" size="60" value="hello from the browser">
<button>send</button></form><pre id="out"></pre>
<script>
const out = document.getElementById("out");
const show = (text) => { out.textContent += text; };
const saved = JSON.parse(localStorage.getItem("answer") || "null");

function remember(id, last, done) {
  localStorage.setItem("answer", JSON.stringify({id, last, done, text: out.textContent}));
}

function resume(a) {  // after a reload: EventSource from where the page stopped
  out.textContent = a.text;
  const es = new EventSource(`streams/chat:answers/${a.id}?after_seq=${a.last}`);
  es.onmessage = (e) => { show(e.data); remember(a.id, +e.lastEventId, false); };
  es.addEventListener("end", () => { es.close(); remember(a.id, a.last, true); });
  es.addEventListener("error", (e) => { if (e.data) es.close(); });
}

document.getElementById("f").onsubmit = async (ev) => {
  ev.preventDefault();
  out.textContent = "";
  const r = await fetch("streams/chat:answers", {method: "POST",
                                                 body: document.getElementById("q").value});
  const id = r.headers.get("Stream-Id");
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "", last = 0;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buf += value;
    let cut;
    while ((cut = buf.indexOf("\\n\\n")) >= 0) {  // one SSE event
      const event = buf.slice(0, cut); buf = buf.slice(cut + 2);
      const lines = event.split("\\n");
      const idLine = lines.find((l) => l.startsWith("id: "));
      const data = lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6));
      if (lines.some((l) => l.startsWith("event:"))) continue;  // end, gap, error
      if (idLine) last = +idLine.slice(4);
      if (data.length) { show(data.join("\\n")); remember(id, last, false); }
    }
  }
  remember(id, last, true);
};

if (saved && !saved.done) resume(saved);
else if (saved) out.textContent = saved.text;
</script>
"""


async def page(_request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


app = Starlette(routes=[Route("/", page), Mount("/streams", app=streams)])


def main(argv: list[str] | None = None) -> None:
    """Serve the page and the streams until interrupted."""
    import uvicorn  # noqa: PLC0415 - only the command line needs it

    parser = argparse.ArgumentParser(prog="python examples/chat_app.py")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    print(f"open http://127.0.0.1:{args.port}/ (reload it mid-answer)", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
