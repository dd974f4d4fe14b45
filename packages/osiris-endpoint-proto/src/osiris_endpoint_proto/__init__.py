"""The endpoint agent protocol, ``osiris.agent.v1`` (agent.proto beside
this file). ``agent_pb2`` and ``agent_pb2_grpc`` are generated from it when
the package is built (hatch_build.py); nothing generated is committed.

Limits both sides keep, named once here.
"""

from __future__ import annotations

#: The gRPC service's full name, for health and reflection.
SERVICE = "osiris.agent.v1.EndpointAgent"
#: The default port (the seed's, and docs/endpoints.md's).
DEFAULT_PORT = 50051
#: Largest message either side accepts (bytes).
MAX_MESSAGE = 4 * 1024 * 1024
#: Most events in one batch.
MAX_BATCH = 500
#: Largest facts document of one event (bytes of JSON).
MAX_FACTS = 64 * 1024
#: Trailing metadata key of a RESOURCE_EXHAUSTED answer: when to try again.
RETRY_AFTER_MS = "retry-after-ms"
