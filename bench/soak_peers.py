"""The soak's SMTP peers: one asyncio listener on 0.0.0.0:PORT in the bench's private network namespace.

    python bench/soak_peers.py PLAN.json PORT

PLAN.json maps each peer address to a behaviour; a connection gets the behaviour of the address it was made to
(its socket's local address). The hostile behaviours are the lab's own (tests/lab/smtp_peers.py): ``dribble``
(220- continuation lines one byte every 0.5 s), ``silent`` (accepts, never speaks), ``garbage`` (an HTTP error
page instead of SMTP), ``greet421`` (421 and close). ``accept`` is a small polite MTA (220, EHLO, QUIT). Runs
until SIGTERM or SIGINT; every connection is bounded by the lab's 60 s connection lifetime.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.lab import in_private_netns  # noqa: E402
from tests.lab import plan  # noqa: E402
from tests.lab.smtp_peers import LINE_LIMIT, RAW, _Conn, _Peer, _run_raw  # noqa: E402

KEPT_CONVERSATIONS = 2  # per address: the lab's recorder keeps 200, a long soak needs none of them


async def _accept(conn: _Conn) -> None:
    await conn.send("220 peer.soak.test ESMTP")
    await conn.commands(["250-peer.soak.test", "250 8BITMIME"])


BEHAVIOURS = {
    "accept": _accept,
    "dribble": RAW[plan.DRIBBLE],
    "silent": RAW[plan.SILENT],
    "garbage": RAW[plan.GARBAGE],
    "greet421": RAW[plan.GREET_421],
}


async def serve(behaviours: dict[str, str], port: int) -> None:
    lock = threading.Lock()
    peers = {}
    for address in behaviours:
        peer = _Peer(address, lock)
        peer.conversations = collections.deque(maxlen=KEPT_CONVERSATIONS)
        peers[address] = peer
    handlers = {address: BEHAVIOURS[kind] for address, kind in behaviours.items()}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("sockname")[0]
        behaviour = handlers.get(address)
        if behaviour is None:  # not a peer of the plan (e.g. a readiness check on 127.0.0.1)
            writer.transport.abort()
            return
        await _run_raw(peers[address], behaviour, reader, writer)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(handle, "0.0.0.0", port, limit=LINE_LIMIT, backlog=1024)
    print("listening", flush=True)
    async with server:
        await stop.wait()
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        task.cancel()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    if not in_private_netns():
        print("refusing to bind 0.0.0.0 outside a private network namespace", file=sys.stderr)
        return 1
    behaviours = json.loads(Path(argv[0]).read_text())
    unknown = set(behaviours.values()) - set(BEHAVIOURS)
    if unknown:
        print(f"unknown behaviours {sorted(unknown)}", file=sys.stderr)
        return 2
    asyncio.run(serve(behaviours, int(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
