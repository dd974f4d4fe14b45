"""The limit bench/ingest compares with: a bare ``grpc.aio`` server with
the appliance's own mutual-TLS credentials that acknowledges every batch
as soon as it has read it (no validation, no store, no evidence). Prints
its port, then serves until killed."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import grpc

from osiris_endpoint_proto import MAX_MESSAGE
from osiris_endpoint_proto import agent_pb2 as pb
from osiris_endpoint_proto import agent_pb2_grpc as rpc
from osiris_endpoints.pki import Authority


class Bare(rpc.EndpointAgentServicer):
    async def Stream(self, request_iterator, context):
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        await context.write(pb.ApplianceMessage(welcome=pb.Welcome(
            acked_seq=0, server_time_ms=int(time.time() * 1000), heartbeat_seconds=60, max_batch=500)))
        while True:
            m = await context.read()
            if m is grpc.aio.EOF:
                return
            if m.WhichOneof("kind") == "batch" and m.batch.events:
                await context.write(pb.ApplianceMessage(ack=pb.Ack(through_seq=m.batch.events[-1].seq)))


async def main(key_dir: str) -> None:
    authority = Authority.load(Path(key_dir))
    key, chain = authority.server_identity(["localhost", "127.0.0.1"])
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                      ("grpc.max_concurrent_streams", 8)])
    rpc.add_EndpointAgentServicer_to_server(Bare(), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=authority.pem, require_client_auth=True))
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
