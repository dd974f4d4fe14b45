"""The L2 planner against a local aiohttp server speaking the OpenAI
chat-completions shape: good and bad answers, errors, a stall, and no
request at all when disabled."""

import asyncio
import inspect
import json
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from osiris import testing
from osiris.testing import load_plugin
from osiris.config import ConfigError
from osiris.records import PlanProposal
from osiris_l2_llm import plugin

API_KEY = "sk-test-6a1f93c0-must-never-leak"

ENABLE = {
    "id": "windows.firewall.enable_profiles",
    "title": "Enable Windows Firewall on every profile",
    "risk": "low",
    "params_schema": {
        "type": "object",
        "properties": {"profiles": {"type": "array", "items": {"enum": ["Domain", "Private", "Public"]}, "minItems": 1}},
        "required": ["profiles"],
        "additionalProperties": False,
    },
}
RESET = {
    "id": "windows.firewall.reset_policy",
    "title": "Reset the firewall policy to the baseline",
    "risk": "medium",
    "params_schema": {"type": "object", "properties": {}, "additionalProperties": False},
}
INCIDENT = {
    "id": 9,
    "target": "dc01.clinic-a.local",
    "role": "dc",
    "check_id": "windows.firewall.profiles_enabled",
    "check_title": "Windows Firewall enabled on every profile",
    "severity": "high",
    "hipaa": ["164.312(e)(1)"],
    "reason": "disabled profiles: ['Public']",
    "facts": {"enabled": [True, True, False], "disabled": ["Public"]},
    "opened_at": "2025-03-01T10:00:00+00:00",
    "site": "clinic-a-secret-site-name",
    "tier_history": [{"tier": "L1", "runbook": RESET["id"], "ok": False, "detail": "verification failed"}],
    "candidates": [ENABLE, RESET],
}


def completion(content):
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }


def answer(runbook, params, rationale="Public profile is off; enabling it is the low-risk fix."):
    return web.json_response(completion(json.dumps({"runbook": runbook, "params": params, "rationale": rationale})))


class API:
    """The chat completions endpoint; ``reply`` builds each response."""

    def __init__(self):
        self.requests: list[tuple[dict, dict]] = []
        self.reply = lambda: answer(ENABLE["id"], {"profiles": ["Public"]})
        self.release = asyncio.Event()

    async def handle(self, request):
        self.requests.append((dict(request.headers), await request.json()))
        reply = self.reply()
        return await reply if inspect.isawaitable(reply) else reply


@pytest.fixture
async def api():
    a = API()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", a.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    a.url = str(server.make_url("/v1/chat/completions"))
    yield a
    a.release.set()
    await server.close()


def loaded(tmp_path, **settings):
    return load_plugin(tmp_path, "l2-llm", settings, secrets={"l2-llm": API_KEY})


def enabled(tmp_path, api, **settings):
    return loaded(tmp_path, enabled=True, url=api.url, allow_http_for_lab=True, model="test-model", **settings)


async def plan(ld, incident=INCIDENT):
    """Through the hook, as the ladder calls it."""
    result = ld.pm.hook.osiris_plan(incident=incident, ctx=ld.ctx)
    return await result if inspect.isawaitable(result) else result


async def test_a_good_answer_becomes_a_proposal(tmp_path, api):
    proposal = await plan(enabled(tmp_path, api))
    assert proposal == PlanProposal(
        ENABLE["id"], {"profiles": ["Public"]}, "l2-llm (test-model): Public profile is off; enabling it is the low-risk fix."
    )
    [(headers, body)] = api.requests
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert body["model"] == "test-model" and body["temperature"] == 0
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["properties"]["runbook"]["enum"] == [ENABLE["id"], RESET["id"]]
    assert schema["properties"]["params"]["anyOf"] == [ENABLE["params_schema"], RESET["params_schema"]]
    assert schema["required"] == ["runbook", "params", "rationale"] and schema["additionalProperties"] is False
    question = json.loads(body["messages"][1]["content"])
    assert question["check"]["id"] == INCIDENT["check_id"] and question["failing_verdict"] == INCIDENT["reason"]
    assert question["attempts_so_far"] == INCIDENT["tier_history"]
    assert [c["id"] for c in question["candidates"]] == [ENABLE["id"], RESET["id"]]
    # data minimisation: no host name, site or incident id leaves the appliance
    raw = json.dumps(body)
    assert "dc01" not in raw and INCIDENT["site"] not in raw and "opened_at" not in raw


async def test_one_candidate_constrains_params_to_its_schema(tmp_path, api):
    api.reply = lambda: answer(RESET["id"], {})
    proposal = await plan(enabled(tmp_path, api, temperature=None), {**INCIDENT, "candidates": [RESET]})
    assert proposal.runbook == RESET["id"] and proposal.params == {}
    assert "temperature" not in api.requests[0][1] and api.requests[0][1]["max_tokens"] == 400
    schema = api.requests[0][1]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["params"] == RESET["params_schema"]
    assert schema["properties"]["runbook"]["enum"] == [RESET["id"]]


@pytest.mark.parametrize(
    "reply, why",
    [
        (lambda: answer("windows.firewall.disable_everything", {}), "names runbook 'windows.firewall.disable_everything', which is not a candidate"),
        (lambda: answer(ENABLE["id"], {"profiles": ["Public", "Everything"]}), "do not follow its params_schema: profiles/1: 'Everything' is not one of"),
        (lambda: answer(ENABLE["id"], {"profiles": ["Public"], "script": "Set-NetFirewallProfile -Enabled False"}), "Additional properties are not allowed ('script'"),
        (lambda: answer(ENABLE["id"], {}), "(top level): 'profiles' is a required property"),
        (lambda: web.json_response(completion("Sure! Run `netsh advfirewall set allprofiles state on`")), "the answer is not JSON"),
        (lambda: web.json_response(completion('["windows.firewall.enable_profiles"]')), "not a JSON object"),
        (lambda: web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500), "HTTP 500 (server_error)"),
        (lambda: web.Response(text="<html>bad gateway</html>", status=200), "not a chat completion"),
        (lambda: web.json_response({"choices": [{"message": {"role": "assistant", "content": None, "refusal": "I cannot help"}}]}), "the model refused: I cannot help"),
    ],
    ids=["not-a-candidate", "params-enum", "extra-param", "missing-param", "prose", "not-object", "http-500", "not-completion", "refusal"],
)
async def test_unusable_answers_give_no_plan_and_say_why(tmp_path, api, caplog, reply, why):
    caplog.set_level(logging.DEBUG, logger="osiris")
    api.reply = reply
    assert await plan(enabled(tmp_path, api)) is None
    assert len(api.requests) == 1
    [record] = [r for r in caplog.records if r.name == "osiris.l2-llm"]
    assert "incident 9 (windows.firewall.profiles_enabled): no plan:" in record.getMessage()
    assert why in record.getMessage()


async def test_a_stalled_api_times_out(tmp_path, api, caplog):
    async def stall():
        await api.release.wait()
        return web.json_response({})

    api.reply = stall
    assert await plan(enabled(tmp_path, api, timeout=0.2)) is None
    assert "no plan: test-model timed out after 0.2 s" in caplog.text


@pytest.fixture
def refused_port():
    with testing.refused_port() as port:
        yield port


async def test_unreachable_api_gives_no_plan(tmp_path, refused_port, caplog):
    ld = loaded(tmp_path, enabled=True, url=f"http://127.0.0.1:{refused_port}/v1/chat/completions", allow_http_for_lab=True, model="m")
    assert await plan(ld) is None
    assert "request failed: ClientConnectorError" in caplog.text


async def test_disabled_means_no_request_at_all(tmp_path, api):
    ld = loaded(tmp_path, url=api.url, allow_http_for_lab=True, model="test-model")  # enabled defaults to false
    assert ld.pm.hook.osiris_plan(incident=INCIDENT, ctx=ld.ctx) is None  # not even a coroutine
    assert plugin.osiris_plan(INCIDENT, ld.ctx) is None
    on = enabled(tmp_path, api)
    assert on.pm.hook.osiris_plan(incident={**INCIDENT, "candidates": []}, ctx=on.ctx) is None
    assert api.requests == []


async def test_the_key_never_reaches_logs_or_proposals(tmp_path, api, caplog):
    caplog.set_level(logging.DEBUG)
    ld = enabled(tmp_path, api)
    # Some APIs echo part of the key in an authentication error's message.
    api.reply = lambda: web.json_response(
        {"error": {"message": f"Incorrect API key provided: {API_KEY}", "type": "invalid_request_error", "code": "invalid_api_key"}},
        status=401,
    )
    assert await plan(ld) is None
    assert "HTTP 401 (invalid_request_error, invalid_api_key)" in caplog.text
    api.reply = lambda: answer(ENABLE["id"], {"profiles": ["Public"]}, rationale="ok")
    proposal = await plan(ld)
    ld.ctx.secrets.path_of("l2-llm").unlink()
    assert await plan(ld) is None
    assert "secret 'l2-llm': cannot read" in caplog.text
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    assert API_KEY not in ours and API_KEY not in repr(proposal)
    assert len(api.requests) == 2  # the missing key stopped the third before sending


def test_settings(tmp_path):
    with pytest.raises(ConfigError, match="'plugins.l2-llm', key 'model': expected a model name when enabled is true"):
        loaded(tmp_path, enabled=True)
    with pytest.raises(ConfigError, match=r"key 'url': expected an https:// URL \(plain http:// only with allow_http_for_lab"):
        loaded(tmp_path, url="http://llm.lab/v1/chat/completions")
    with pytest.raises(ConfigError, match="unknown key 'api_key'"):
        loaded(tmp_path, api_key=API_KEY)
    assert loaded(tmp_path).ctx.settings("l2-llm").enabled is False


def test_answer_validation_rejects_a_broken_params_schema():
    broken = {**RESET, "params_schema": {"type": "object", "properties": {"x": {"type": "no-such-type"}}}}
    with pytest.raises(plugin.Rejected, match="invalid params_schema"):
        plugin.validate_answer(json.dumps({"runbook": RESET["id"], "params": {}, "rationale": ""}), [broken])
