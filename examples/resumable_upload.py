"""A resumable upload that survives a dropped connection and ends with the server's answer.

    python examples/resumable_upload.py [--size-kb N] [--chunk-kb K] [--cut-at F]

The client writes a file of ``--size-kb`` KB in a temporary directory and uploads it to the
``files:store`` channel with ``client.upload(..., resumable=True, result=True)``. When a
fraction ``--cut-at`` of it is written, the client's transport is killed, as a network failure
would. The server parks the upload with the client's session (its handler keeps waiting for
chunks); the client reconnects, resumes its session and the upload, and sends on from the
next chunk the server expects: nothing is sent twice and nothing is lost. The handler stores
the file and returns its SHA-256, which the client gets from ``await up.result()`` and checks
against its own.

Prints one JSON line: the bytes sent, the reconnects, and whether the digests match.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import tempfile
from pathlib import Path
from typing import Any

from transports import Backoff
from transports import asyncio as sp

CHANNEL = "files:store"


async def main(size_kb: int = 512, chunk_kb: int = 16, cut_at: float = 0.4) -> dict[str, Any]:
    """Upload a generated file across one dropped connection; returns what was observed."""
    data = random.Random(size_kb).randbytes(size_kb * 1024)  # noqa: S311 - test data
    chunk = chunk_kb * 1024
    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp)

        async def store(upload: sp.ServerUpload) -> bytes:
            digest = hashlib.sha256()
            with (inbox / upload.stream_id).open("wb") as out:
                async for part in upload:  # waits while the uploader reconnects
                    out.write(part)
                    digest.update(part)
            return digest.hexdigest().encode()  # the upload's result

        server = await sp.serve(None, "tcp://127.0.0.1:0")
        server.channel(CHANNEL, on_upload=store)
        client = await sp.connect(server.address, reconnect=Backoff(initial=0.01, attempts=20))
        cut = int(len(data) * cut_at)
        sent = 0
        async with client.upload(CHANNEL, "report.bin", resumable=True, result=True) as up:
            for start in range(0, len(data), chunk):
                await up.write(data[start : start + chunk])
                sent += len(data[start : start + chunk])
                if sent - chunk < cut <= sent:
                    client.abort_transport()  # the network fails mid-upload
        answer = await up.result()
        stored = (inbox / "report.bin").read_bytes()
        await client.close()
        await server.shutdown()
    expected = hashlib.sha256(data).hexdigest()
    return {
        "bytes": sent,
        "reconnects": client.statistics().reconnects,
        "resumed": client.statistics().resumed,
        "digest_matches": answer.decode() == expected and stored == data,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-kb", type=int, default=512)
    parser.add_argument("--chunk-kb", type=int, default=16)
    parser.add_argument("--cut-at", type=float, default=0.4)
    ns = parser.parse_args()
    print(json.dumps(asyncio.run(main(ns.size_kb, ns.chunk_kb, ns.cut_at))))
