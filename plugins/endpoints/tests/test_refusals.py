"""Who is refused, and that each refusal says why: a reused or expired
token, a token for another site or with a pin that is not this
appliance's CA, a revoked certificate (new and open streams), a client
without a certificate, a certificate from another CA, an unknown check id,
too many handshakes at once. The first two fail the TLS handshake (grpc
says only UNAVAILABLE); the client's own handshake names the cause."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest
from osiris_endpoint.agent import EndpointAgent, channel_options, enrol
from osiris_endpoint.diagnose import Refusal, pin_of, why_refused
from osiris_endpoint.identity import EnrolError, Identity, csr_for, new_key
from osiris_endpoint_proto import RETRY_AFTER_MS
from osiris_endpoint_proto import agent_pb2 as pb
from osiris_endpoint_proto import agent_pb2_grpc as rpc

from .helpers import appliance_config, osiris, until


async def call_stream(address: str, credentials, messages, read: int = 100):
    """A stream in lockstep, as the appliance answers every message (Hello
    with Welcome, a batch with an ack, a heartbeat with one) or ends the
    call: send one, read its answer, and so on; then end the sending side.
    The answers and the final (code, details, trailing metadata). Never
    writing after the appliance ended the call matters: grpc's client turns
    a failed write into a local INTERNAL status that hides the appliance's."""
    async with grpc.aio.secure_channel(address, credentials, options=channel_options("127.0.0.1")) as channel:
        call = rpc.EndpointAgentStub(channel).Stream()
        got = []
        try:
            for m in messages:
                await call.write(m)
                answer = await asyncio.wait_for(call.read(), 30)
                if answer is grpc.aio.EOF:
                    break
                got.append(answer)
            else:
                await call.done_writing()
            while len(got) < read:
                answer = await asyncio.wait_for(call.read(), 30)
                if answer is grpc.aio.EOF:
                    break
                got.append(answer)
            code = await asyncio.wait_for(call.code(), 30)
            return got, code, await call.details(), dict(await call.trailing_metadata() or ())
        except grpc.aio.AioRpcError as exc:
            return got, exc.code(), exc.details(), dict(exc.trailing_metadata() or ())


def creds(identity: Identity, ca: bytes | None = None):
    return grpc.ssl_channel_credentials(ca or identity.ca_pem, identity.key_pem, identity.cert_pem)


def hello(queue="q1"):
    return pb.EndpointMessage(hello=pb.Hello(queue_id=queue, agent_version="test"))


async def test_a_token_enrols_once_and_not_after_it_expires(appliance, tmp_path):
    app = await appliance()
    token = app.token()
    await enrol(tmp_path / "a", token, "ws01")
    with pytest.raises(EnrolError, match="PERMISSION_DENIED: the enrolment token was already used"):
        await enrol(tmp_path / "b", token, "ws02")
    with pytest.raises(EnrolError, match=r"PERMISSION_DENIED: the enrolment token expired at \d{4}-"):
        await enrol(tmp_path / "c", app.token(ttl=-1), "ws02")
    # Two uses: two endpoints, then no more.
    token = app.token(uses=2)
    await enrol(tmp_path / "d", token, "ws02")
    await enrol(tmp_path / "e", token, "ws03")
    with pytest.raises(EnrolError, match="already used"):
        await enrol(tmp_path / "f", token, "ws04")
    # An enrolled name is not taken over by another token holder.
    with pytest.raises(EnrolError, match="ALREADY_EXISTS: endpoint 'ws01' is already enrolled; revoke it first"):
        await enrol(tmp_path / "g", app.token(), "ws01")
    assert not (tmp_path / "b" / "identity.json").exists()


async def test_a_token_for_another_site_or_ca_is_refused(appliance, tmp_path):
    from osiris_endpoints import tokens

    app = await appliance()
    real = tokens.decode(app.token())
    other_site = tokens.Token("elsewhere", real.address, real.pin, real.secret).encode()
    with pytest.raises(EnrolError, match="the enrolment token is for site 'elsewhere'; this appliance is site 'clinic'"):
        await enrol(tmp_path / "a", other_site, "ws01")
    wrong_pin = tokens.Token(real.site, real.address, "0" * 64, real.secret).encode()
    with pytest.raises(EnrolError, match="does not have the CA the token pins"):
        await enrol(tmp_path / "b", wrong_pin, "ws01")
    with pytest.raises(EnrolError, match="not an Osiris enrolment token"):
        await enrol(tmp_path / "c", "hello", "ws01")


async def test_a_revoked_endpoint_is_cut_off_on_its_open_stream_and_after(lab, appliance, endpoint, tmp_path):
    app = await appliance()
    ep = await endpoint(app)
    await until(lambda: ep.agent.connected.is_set(), what="the stream")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(appliance_config(lab, app.loaded.ctx.state_dir)))
    result = await osiris(config, "endpoints", "revoke", "ws01")
    assert result.returncode == 0, result.stderr
    revoked_at = time.monotonic()
    # The open stream ends within revocation_poll (0.3 s here; 15 s by default, at most 60).
    await until(lambda: ep.agent.last_status and ep.agent.last_status[0] == "PERMISSION_DENIED",
                what="the open stream to be closed")
    assert "endpoint 'ws01' was revoked at" in ep.agent.last_status[1]
    assert time.monotonic() - revoked_at < 30
    # And a new stream with the same certificate is refused, saying why.
    _, code, details, _ = await call_stream(f"127.0.0.1:{app.source.port}", creds(ep.agent.identity), [hello()])
    assert code == grpc.StatusCode.PERMISSION_DENIED and "endpoint 'ws01' was revoked at" in details
    listed = await osiris(config, "endpoints", "list")
    assert [line.split()[-1] for line in listed.stdout.splitlines() if line.startswith("ws01")] == ["revoked"]
    missing = await osiris(config, "endpoints", "revoke", "nosuch")
    assert missing.returncode == 1 and "osiris: no endpoint named 'nosuch'" in missing.stderr


class NoChecks:
    async def run(self, checks):
        return []


async def refused_agent(directory, identity: Identity, **changes) -> tuple[str, str]:
    """The status a real endpoint agent with this identity (changed)
    ends up with, once it has failed to connect."""
    Identity(**{**identity.__dict__, **changes}).save(directory)
    agent = EndpointAgent(directory, NoChecks(), backoff=0.05, backoff_cap=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await until(lambda: agent.last_status, what="a failed connection")
        return agent.last_status
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        agent.close()
        assert not list(directory.glob(".diagnose-*"))  # the key's copy for the probe is gone


async def test_no_client_certificate_or_one_from_another_ca_is_refused_naming_the_cause(appliance, tmp_path):
    app = await appliance()
    identity = await enrol(tmp_path / "mine", app.token(), "ws01")
    # Another appliance, another CA: its endpoint's certificate is worthless here.
    other = await appliance(hosts=())
    stranger = await enrol(tmp_path / "stranger", other.token(), "ws09")
    before, before_other = dict(app.service.counts), dict(other.service.counts)
    host, port = "127.0.0.1", app.source.port
    stream_port = f"{host}:{port}"
    pin, other_pin = pin_of(identity.ca_pem)[:16], pin_of(stranger.ca_pem)[:16]

    # grpc says only UNAVAILABLE: the TLS handshake refuses both (mutual TLS only).
    _, code, _, _ = await call_stream(stream_port, grpc.ssl_channel_credentials(identity.ca_pem), [hello()])
    assert code == grpc.StatusCode.UNAVAILABLE
    _, code, _, _ = await call_stream(stream_port, creds(stranger, identity.ca_pem), [hello()])
    assert code == grpc.StatusCode.UNAVAILABLE
    # One TLS handshake of the client's own names the cause.
    refused = f"the appliance at {stream_port} refused the TLS handshake: "
    assert await why_refused(host, port, identity.ca_pem) == Refusal(
        "UNAUTHENTICATED", refused + "no client certificate: the appliance's stream port requires one from its CA "
                                     "(enrol first: osiris-endpoint enrol TOKEN)")
    not_ours = (refused + "this endpoint's certificate (CN=ws09, issued by CN=Osiris endpoint CA clinic,O=Osiris) "
                f"was not issued by this appliance's CA (SHA-256 {pin}...): it is from another appliance; enrol "
                "again with a token from this one")
    assert await why_refused(host, port, identity.ca_pem, stranger.key_pem, stranger.cert_pem) == Refusal(
        "PERMISSION_DENIED", not_ours)
    assert await why_refused(host, port, identity.ca_pem, identity.key_pem, identity.cert_pem) is None

    # The endpoint agent says it itself: a certificate from another appliance's CA ...
    code, details = await refused_agent(tmp_path / "a", stranger, ca_pem=identity.ca_pem, stream_port=port)
    assert (code, details) == ("PERMISSION_DENIED", not_ours)
    # ... and an appliance that is not the one it enrolled with (the CA pin).
    code, details = await refused_agent(tmp_path / "b", identity, stream_port=other.source.port)
    assert code == "UNAUTHENTICATED"
    assert details.startswith(f"the appliance at 127.0.0.1:{other.source.port} presents a certificate that the CA "
                              f"this endpoint enrolled with (SHA-256 {pin}...) did not issue (")
    assert details.endswith("): the appliance was reinstalled with a new CA, or this address is not the appliance; "
                            "enrol again with a new token")
    assert pin != other_pin
    assert app.service.counts == before and other.service.counts == before_other  # nothing reached the services

    # At the enrolment port (no client certificate asked) a stream is refused by the service, by name.
    _, code, details, _ = await call_stream(f"127.0.0.1:{app.source.enrol_port}",
                                            grpc.ssl_channel_credentials(identity.ca_pem), [hello()])
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert details == f"a client certificate is required: enrol first, then connect to the stream port ({app.source.port})"
    # The real certificate works, over TLS 1.3.
    got, code, details, _ = await call_stream(stream_port, creds(identity), [hello()])
    assert got[0].WhichOneof("kind") == "welcome" and code == grpc.StatusCode.OK


async def test_an_unknown_check_id_is_refused_by_name(appliance, tmp_path):
    app = await appliance()
    identity = await enrol(tmp_path / "e", app.token(), "ws01")
    batch = pb.EndpointMessage(batch=pb.Batch(events=[pb.Event(
        seq=1, check_id="windows.screenlock", observed_at_ms=int(time.time() * 1000), facts_json="{}")]))
    got, code, details, _ = await call_stream(f"127.0.0.1:{app.source.port}", creds(identity), [hello(), batch], read=2)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    version = got[0].welcome.catalogue.version
    assert details == (f"event seq 1: check id 'windows.screenlock' is not in this appliance's catalogue "
                       f"(version {version}) for this endpoint")
    assert not app.agent.store.has_report("endpoint/ws01/q1/1")


async def test_too_many_handshakes_at_once_get_resource_exhausted_with_a_retry_hint(appliance, tmp_path):
    app = await appliance(endpoints={"handshake_rate": 0.5, "handshake_burst": 2})
    identity = await enrol(tmp_path / "e", app.token(), "ws01")  # takes one
    results = [await call_stream(f"127.0.0.1:{app.source.port}", creds(identity), [hello()]) for _ in range(3)]
    codes = [r[1] for r in results]
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    _, _, details, trailing = results[codes.index(grpc.StatusCode.RESOURCE_EXHAUSTED)]
    hint = int(trailing[RETRY_AFTER_MS])
    assert hint > 0 and details == f"too many new connections at once; retry in {hint} ms"


async def test_renewal_gives_a_new_certificate_and_the_old_one_stays_usable_until_replaced(appliance, tmp_path):
    app = await appliance()
    identity = await enrol(tmp_path / "e", app.token(), "ws01")
    key, key_pem = new_key()
    async with grpc.aio.secure_channel(f"127.0.0.1:{app.source.port}", creds(identity),
                                       options=channel_options("127.0.0.1")) as channel:
        resp = await rpc.EndpointAgentStub(channel).Renew(pb.RenewRequest(csr=csr_for(key, "ignored-name")))
    from cryptography import x509
    cert = x509.load_pem_x509_certificate(resp.certificate)
    assert cert.subject.rfc4514_string() == "CN=ws01"  # the enrolled name, not the CSR's
    renewed = Identity(**{**identity.__dict__, "key_pem": key_pem, "cert_pem": resp.certificate})
    for who in (renewed, identity):
        got, code, _, _ = await call_stream(f"127.0.0.1:{app.source.port}", creds(who), [hello()])
        assert code == grpc.StatusCode.OK
    # A second renewal retires the first certificate.
    async with grpc.aio.secure_channel(f"127.0.0.1:{app.source.port}", creds(renewed),
                                       options=channel_options("127.0.0.1")) as channel:
        await rpc.EndpointAgentStub(channel).Renew(pb.RenewRequest(csr=csr_for(new_key()[0], "ws01")))
    _, code, details, _ = await call_stream(f"127.0.0.1:{app.source.port}", creds(identity), [hello()])
    assert code == grpc.StatusCode.PERMISSION_DENIED and "was replaced or revoked" in details
