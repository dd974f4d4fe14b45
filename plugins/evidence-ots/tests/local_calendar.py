"""A local OpenTimestamps calendar for tests, speaking the calendar protocol
(``POST /digest``, ``GET /timestamp/<hex>``) over real HTTP (aiohttp).

Its answers are real timestamps built with the ``opentimestamps`` library:
a submitted digest gets a nonce appended and is hashed into a commitment
that carries a ``PendingAttestation`` naming this calendar. :meth:`mine`
aggregates every pending commitment with the library's ``make_merkle_tree``
into a tip, puts that tip as the Merkle root of a block header it makes up
(regtest difficulty: it has no mainnet proof of work, which the verifier
notices unless told to accept test headers) and attaches a
``BitcoinBlockHeaderAttestation`` for that height. From then on the
calendar serves the upgraded path for each commitment.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from aiohttp import web
from bitcoin.core import CBlockHeader
from opentimestamps.core.notary import BitcoinBlockHeaderAttestation, PendingAttestation
from opentimestamps.core.op import OpAppend, OpSHA256
from opentimestamps.core.serialize import BytesSerializationContext
from opentimestamps.core.timestamp import Timestamp, make_merkle_tree


def _bytes(ts: Timestamp) -> bytes:
    ctx = BytesSerializationContext()
    ts.serialize(ctx)
    return ctx.getbytes()


class LocalCalendar:
    def __init__(self) -> None:
        self.url = ""
        self.pending: list[bytes] = []
        self.upgraded: dict[bytes, Timestamp] = {}
        self.headers: dict[int, bytes] = {}
        self.submissions = 0
        self.down = False
        self.delay = 0.0  # seconds before answering a submission (a slow calendar)
        self.hold: asyncio.Event | None = None  # if given, a submission is answered only once it is set
        self.arrivals = 0  # submissions received, answered or not
        self.on_arrival: Callable[[], None] | None = None  # called as each submission arrives
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/digest", self.submit)
        app.router.add_get("/timestamp/{commitment}", self.timestamp)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()  # no submission left waiting
        if self._runner is not None:
            await self._runner.cleanup()

    async def submit(self, request: web.Request) -> web.Response:
        self.arrivals += 1
        if self.on_arrival is not None:
            self.on_arrival()
        if self.hold is not None:
            await self.hold.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            return web.Response(status=503, text="calendar down")
        digest = await request.read()
        if not 1 <= len(digest) <= 64:
            return web.Response(status=400, text="bad digest")
        self.submissions += 1
        ts = Timestamp(digest)
        commitment = ts.ops.add(OpAppend(os.urandom(8))).ops.add(OpSHA256())
        commitment.attestations.add(PendingAttestation(self.url))
        self.pending.append(commitment.msg)
        return web.Response(body=_bytes(ts), content_type="application/octet-stream")

    async def timestamp(self, request: web.Request) -> web.Response:
        commitment = bytes.fromhex(request.match_info["commitment"])
        if commitment in self.upgraded:
            return web.Response(body=_bytes(self.upgraded[commitment]), content_type="application/octet-stream")
        if commitment in self.pending:
            return web.Response(status=404, text="Pending confirmation in Bitcoin blockchain")
        return web.Response(status=404, text="Not found")

    def mine(self, height: int) -> bytes:
        """Aggregate the pending commitments into a block; returns its header."""
        stamps = [Timestamp(c) for c in self.pending]
        tip = make_merkle_tree(stamps)
        header = CBlockHeader(nVersion=0x20000000, hashPrevBlock=os.urandom(32), hashMerkleRoot=tip.msg,
                              nTime=int(time.time()), nBits=0x207FFFFF, nNonce=0)
        tip.attestations.add(BitcoinBlockHeaderAttestation(height))
        for c, s in zip(self.pending, stamps):
            self.upgraded[c] = s
        self.pending = []
        self.headers[height] = header.serialize()
        return self.headers[height]
