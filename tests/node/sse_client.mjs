// An independent SSE client: the npm `eventsource` package under node.
//
//   node sse_client.mjs URL [--post BODY] [--timeout SECONDS] [--no-close-at-end]
//
// Reads URL with EventSource (GET; it reconnects by itself with Last-Event-ID). With --post,
// the first request is POST URL with BODY (the open's args) instead, and every reconnect reads
// the new stream with GET URL/{Stream-Id}: the chat shape. Prints one JSON line per event:
//   {"type": "open"}, {"type": "stream-id", "data": ID},
//   {"type": "message" | "bytes" | "gap" | "end" | "error", "id": LAST_EVENT_ID, "data": DATA},
//   {"type": "reconnecting", "data": WHY}, {"type": "closed", "status": CODE, "data": WHY},
//   {"type": "timeout"}
// and exits 0 at the end event (with --no-close-at-end it reads on: the server closes the body,
// EventSource reconnects, and only a 204 stops it), at a server error event, or when the
// EventSource closes for good (a 204); 2 on timeout; 1 on a usage error.
import { EventSource } from "eventsource";

const argv = process.argv.slice(2);
let url = null;
let post = null;
let timeout = 60;
let closeAtEnd = true;
for (let i = 0; i < argv.length; i += 1) {
  if (argv[i] === "--post") post = argv[++i] ?? "";
  else if (argv[i] === "--timeout") timeout = Number(argv[++i]);
  else if (argv[i] === "--no-close-at-end") closeAtEnd = false;
  else if (url === null) url = argv[i];
  else {
    process.stderr.write(`unexpected argument ${argv[i]}\n`);
    process.exit(1);
  }
}
if (url === null || !(timeout > 0)) {
  process.stderr.write(
    "usage: node sse_client.mjs URL [--post BODY] [--timeout SECONDS] [--no-close-at-end]\n");
  process.exit(1);
}

const out = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
const finish = (code) => process.stdout.write("", () => process.exit(code));

let streamId = null;
let posted = false;
async function fetchWith(input, init) {
  if (post === null) return fetch(input, init);
  if (!posted) {
    posted = true;
    const headers = {...init.headers, "Content-Type": "text/plain"};
    const response = await fetch(input, {...init, method: "POST", body: post, headers});
    streamId = response.headers.get("stream-id");
    out({type: "stream-id", data: streamId});
    return response;
  }
  if (streamId === null) throw new Error("the POST answer named no Stream-Id to resume");
  return fetch(`${url}/${encodeURIComponent(streamId)}`, init);
}

const source = new EventSource(url, {fetch: fetchWith});
source.addEventListener("open", () => out({type: "open"}));
for (const type of ["message", "bytes", "gap"]) {
  source.addEventListener(type, (e) => out({type, id: e.lastEventId, data: e.data}));
}
source.addEventListener("end", (e) => {
  out({type: "end", id: e.lastEventId, data: e.data});
  if (closeAtEnd) {
    source.close();
    finish(0);
  }
});
source.addEventListener("error", (e) => {
  if (e instanceof MessageEvent) {  // the server's "event: error": terminal
    out({type: "error", id: e.lastEventId, data: e.data});
    source.close();
    finish(0);
    return;
  }
  if (source.readyState === EventSource.CLOSED) {
    out({type: "closed", status: e.code ?? null, data: e.message ?? null});
    finish(0);
    return;
  }
  out({type: "reconnecting", data: e.message ?? null});
});

setTimeout(() => {
  out({type: "timeout"});
  source.close();
  finish(2);
}, timeout * 1000).unref();
