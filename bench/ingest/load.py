"""The load side of bench/ingest, in its own process: N endpoints' real
identities (enrolled through the appliance's real enrolment), one
mutual-TLS stream each, sending batches of events as fast as cumulative
acks allow (``--window`` batches in flight per stream) or paced at
``--rate`` events/s in all, for ``--seconds``.
Prints one JSON line: events acked, seconds, ack latencies (p50, p99).

``--idle``: connect every stream, send nothing but heartbeats every
``--heartbeat`` seconds for ``--seconds``, and report nothing but that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

import grpc

from osiris_endpoint.agent import channel_options
from osiris_endpoint.identity import Identity
from osiris_endpoint_proto import agent_pb2 as pb
from osiris_endpoint_proto import agent_pb2_grpc as rpc

FIREWALL = "windows.firewall.profiles_enabled"
FACTS = json.dumps({"profiles": [{"name": n, "enabled": True, "default_inbound": "Block"}
                                 for n in ("Domain", "Private", "Public")]})


async def read_acks(call, sent_at: dict[int, float], state: dict, acked: asyncio.Event, stats: dict) -> None:
    """Acks as they come: the latency of each batch they cover, for
    batches sent inside the measured window (not during the ramp, while
    the other endpoints' handshakes are still being made)."""
    while True:
        m = await call.read()
        if m is grpc.aio.EOF:
            return
        if m.WhichOneof("kind") == "ack":
            now = time.perf_counter()
            through = m.ack.through_seq
            for top in [t for t in sent_at if t <= through]:
                sent = sent_at.pop(top)
                if sent >= stats["window_from"]:
                    stats["latency"].append(now - sent)
            stats["acked"] += through - state["through"]
            state["through"] = through
            acked.set()


async def one(identity: Identity, address: str, args, until: float, stats: dict, start_gate: asyncio.Event) -> None:
    creds = grpc.ssl_channel_credentials(identity.ca_pem, identity.key_pem, identity.cert_pem)
    queue = f"bench-{identity.name}-{args.run}"
    await start_gate.wait()
    for attempt in range(50):
        try:
            async with grpc.aio.secure_channel(address, creds, options=channel_options("127.0.0.1")) as channel:
                call = rpc.EndpointAgentStub(channel).Stream()
                await call.write(pb.EndpointMessage(hello=pb.Hello(queue_id=queue, agent_version="bench",
                                                                   catalogue_version="")))
                welcome = await call.read()
                if welcome is grpc.aio.EOF:
                    await call.code()
                stats["connected"] += 1
                seq = welcome.welcome.acked_seq
                sent_at: dict[int, float] = {}
                acked = asyncio.Event()
                state = {"through": seq}

                task = asyncio.create_task(read_acks(call, sent_at, state, acked, stats))
                try:
                    if args.idle:
                        while time.monotonic() < until:
                            await asyncio.sleep(min(args.heartbeat, max(0.0, until - time.monotonic())))
                            await call.write(pb.EndpointMessage(heartbeat=pb.Heartbeat(
                                sent_at_ms=int(time.time() * 1000))))
                        return
                    # Paced (--rate): one batch every `period` seconds, starting at a random phase.
                    period = args.count * args.batch / args.rate if args.rate else 0.0
                    next_at = time.monotonic() + random.uniform(0, period)
                    while time.monotonic() < until:
                        if period:
                            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                            next_at += period
                        if len(sent_at) >= args.window:
                            acked.clear()
                            try:
                                await asyncio.wait_for(acked.wait(), 5)
                            except asyncio.TimeoutError:
                                pass
                            continue
                        now_ms = int(time.time() * 1000)
                        events = [pb.Event(seq=seq + i + 1, check_id=FIREWALL, observed_at_ms=now_ms,
                                           facts_json=FACTS, duration_ms=1.0) for i in range(args.batch)]
                        seq += args.batch
                        sent_at[seq] = time.perf_counter()
                        await call.write(pb.EndpointMessage(batch=pb.Batch(events=events)))
                    # Let the last acks come in.
                    end = time.monotonic() + 10
                    while sent_at and time.monotonic() < end:
                        acked.clear()
                        try:
                            await asyncio.wait_for(acked.wait(), 1)
                        except asyncio.TimeoutError:
                            pass
                finally:
                    task.cancel()
                    call.cancel()
                return
        except grpc.aio.AioRpcError as exc:
            stats["errors"][exc.code().name] = stats["errors"].get(exc.code().name, 0) + 1
            hint = dict(exc.trailing_metadata() or ()).get("retry-after-ms")
            await asyncio.sleep(int(hint) / 1000 if hint else random.uniform(0, min(5, 0.1 * 2 ** attempt)))


async def enrol_all(args) -> dict:
    """Enrol ``--count`` endpoints through the real enrolment (a token
    with that many uses), ``--concurrency`` at a time."""
    from osiris_endpoint.agent import enrol

    sem = asyncio.Semaphore(args.concurrency)
    started = time.monotonic()

    async def go(i: int) -> None:
        async with sem:
            for attempt in range(30):
                try:
                    await enrol(Path(args.dir) / f"ep{i:04d}", args.enrol, f"ep{i:04d}")
                    return
                except Exception:
                    if attempt == 29:
                        raise
                    await asyncio.sleep(random.uniform(0, min(5, 0.1 * 2 ** attempt)))

    await asyncio.gather(*(go(i) for i in range(args.count)))
    return {"enrolled": args.count, "seconds": round(time.monotonic() - started, 2)}


async def main_async(args) -> dict:
    identities = [Identity.load(p.parent) for p in sorted(Path(args.dir).glob("*/identity.json"))][: args.count]
    started = time.monotonic() + args.ramp
    stats = {"acked": 0, "latency": [], "connected": 0, "errors": {},
             "window_from": time.perf_counter() + args.ramp}
    gate = asyncio.Event()
    until = started + args.seconds
    tasks = [asyncio.create_task(one(i, args.address, args, until, stats, gate)) for i in identities]
    gate.set()
    await asyncio.sleep(max(0.0, started - time.monotonic()))
    acked_at_start = stats["acked"]
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    acked_in_window = stats["acked"] - acked_at_start
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = sorted(stats["latency"])

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 4) if lat else None

    return {"endpoints": len(identities), "connected": stats["connected"], "acked": stats["acked"],
            "acked_in_window": acked_in_window, "seconds": args.seconds,
            "events_per_s": round(acked_in_window / args.seconds, 1), "p50": pct(0.50), "p99": pct(0.99),
            "errors": stats["errors"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--address", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--window", type=int, default=2)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--ramp", type=float, default=5, help="seconds to connect before the measured window")
    p.add_argument("--run", default="0", help="part of each queue id (a fresh queue per run)")
    p.add_argument("--rate", type=float, default=0.0, help="events/s in all (paced); 0: as fast as acks allow")
    p.add_argument("--idle", action="store_true")
    p.add_argument("--heartbeat", type=float, default=60)
    p.add_argument("--enrol", metavar="TOKEN", help="enrol --count endpoints into --dir and exit")
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args()
    print(json.dumps(asyncio.run(enrol_all(args) if args.enrol else main_async(args))), flush=True)


if __name__ == "__main__":
    main()
