"""File upload with progress, and a server that cancels an upload that grows too big.

    python examples/file_upload.py [--size-mb N] [--chunk-kb K]

The client generates a file of ``--size-mb`` MB in a temporary directory and uploads it twice
to the ``files:upload`` channel with ``async with client.upload(...)``, printing progress as the
server's credit lets chunks through. The upload args carry the file name and a size limit; the
server's handler streams the chunks to disk and, as soon as a file passes its limit, cancels the
upload with an application error code and deletes the partial file.

- Run 1 (limit above the size): accepted; the server's SHA-256 matches the client's.
- Run 2 (limit of a third of the size): cancelled mid-way; the client's ``write`` raises
  :class:`StreamError` with the server's code.

The client hears of the cancel in a ``write`` that waits for credit; a client can run ahead of
the server by the server's credit window plus its own send queue (1 MiB each by default), so
the file must exceed the limit by more than that (the default 4 MB does).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from streamproto import code_name
from transports import StreamError, new_hub
from transports import asyncio as sp

CHANNEL = "files:upload"
FILE_TOO_LARGE = 4013  # an application code (1000-65535): ours to define, not the protocol's


def make_file(path: Path, size: int) -> str:
    """Write ``size`` pseudo-random bytes to ``path``; returns their SHA-256."""
    data = random.Random(size).randbytes(size)  # noqa: S311 - test data, not secrets
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def serve_files(inbox: Path, results: dict[str, asyncio.Future[dict[str, Any]]]) -> Any:
    """The ``on_upload`` handler: write the upload to ``inbox``, within its size limit."""

    async def on_upload(upload: sp.ServerUpload) -> None:
        args = json.loads(upload.args)
        limit = int(args["max_bytes"])
        target = inbox / Path(args["name"]).name  # never a path the client chose
        digest = hashlib.sha256()
        size = 0
        outcome: dict[str, Any] = {"name": target.name}
        try:
            with target.open("wb") as out:
                # Each chunk read returns credit to the client, so an upload never holds more
                # than one window in memory here, however fast the client writes.
                async for chunk in upload:
                    if size + len(chunk) > limit:
                        upload.cancel(FILE_TOO_LARGE, f"{target.name} is over {limit} bytes")
                        raise StreamError(FILE_TOO_LARGE, "too large")
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            outcome |= {"status": "stored", "bytes": size, "sha256": digest.hexdigest()}
        except StreamError as exc:  # ours above, or the client failed or went away
            target.unlink(missing_ok=True)
            outcome |= {"status": "cancelled", "bytes": size, "code": code_name(exc.code)}
        results[upload.stream_id].set_result(outcome)

    return on_upload


async def upload_file(
    client: sp.Client, stream_id: str, path: Path, *, limit: int, chunk_size: int, say: Any
) -> dict[str, Any]:
    """Upload ``path`` as ``stream_id`` with a size limit; returns what the client saw."""
    total = path.stat().st_size
    sent = 0
    shown = -1
    args = json.dumps({"name": path.name, "max_bytes": limit}).encode()
    try:
        async with client.upload(CHANNEL, stream_id, args) as up:
            with path.open("rb") as source:
                while chunk := source.read(chunk_size):
                    await up.write(chunk)  # waits once credit and the send queue are full
                    sent += len(chunk)
                    percent = sent * 100 // total
                    if percent // 10 != shown // 10:
                        shown = percent
                        say(f"  {path.name}: {sent:>9} / {total} bytes ({percent:3d}%)")
        return {"sent": sent, "error": None}
    except StreamError as exc:
        say(f"  {path.name}: stopped by the server after {sent} bytes: {exc}")
        return {"sent": sent, "error": exc.code}


async def main(size_mb: float = 4.0, chunk_kb: int = 64, quiet: bool = False) -> dict[str, Any]:
    say = (lambda *a: None) if quiet else print
    size = int(size_mb * (1 << 20))
    hub = new_hub()  # time.monotonic and 128-bit random ids
    report: dict[str, Any] = {"size": size}
    results: dict[str, asyncio.Future[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        outbox, inbox = Path(tmp, "client"), Path(tmp, "server")
        outbox.mkdir()
        inbox.mkdir()
        source = outbox / "report.bin"
        report["sha256"] = sha = make_file(source, size)
        async with await sp.serve(hub, "tcp://127.0.0.1:0") as server:
            server.channel(CHANNEL, on_upload=serve_files(inbox, results))
            async with await sp.connect(server.address) as client:
                say(f"uploading {source.name}: {size} bytes in {chunk_kb} KiB chunks")
                for run, limit in (("accepted", 2 * size), ("cancelled", size // 3)):
                    say(f"\nrun '{run}': the server takes at most {limit} bytes")
                    start = time.monotonic()
                    # The client names the upload, so it knows where the verdict will land.
                    stream_id = f"{run}-{secrets.token_hex(4)}"
                    results[stream_id] = asyncio.get_running_loop().create_future()
                    client_side = await upload_file(
                        client, stream_id, source, limit=limit, chunk_size=chunk_kb << 10, say=say
                    )
                    # Leaving ``async with`` sent END; the handler finishes once it read it all.
                    server_side = await asyncio.wait_for(results[stream_id], 10)
                    stored = inbox / source.name
                    say(f"  server: {server_side['status']}, {server_side['bytes']} bytes")
                    if server_side.get("sha256") == sha:
                        say(f"  sha256 matches ({sha[:16]}...), {stored.stat().st_size} B on disk")
                    elif not stored.exists():
                        say("  nothing was kept on the server")
                    if server_side["status"] == "cancelled" and client_side["error"] is None:
                        # The last write went into the client's queue before the cancel came
                        # back, and leaving ``async with`` does not wait for the queue to drain.
                        say(
                            "  ...but the client was not told: the cancel came after its last write"
                        )
                    report[run] = {
                        "limit": limit,
                        "client_sent": client_side["sent"],
                        "client_error": client_side["error"],
                        "on_disk": stored.stat().st_size if stored.exists() else None,
                        "seconds": time.monotonic() - start,
                        **{f"server_{k}": v for k, v in server_side.items()},
                    }
                    stored.unlink(missing_ok=True)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=4.0)
    parser.add_argument("--chunk-kb", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(main(args.size_mb, args.chunk_kb))
