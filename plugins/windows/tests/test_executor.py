"""The windows executor against the lab, through the agent's own loading,
registry and engine."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import pytest

from osiris import CheckSpec, Status, Verdict
from osiris import budget as osiris_budget
from osiris.engine import Engine
from osiris.records import Target
from osiris.store import Store
from osiris_lab import emulation
from osiris_windows import client as winclient
from osiris_windows import script
from osiris_windows.checks import PROFILES, checks, runbooks

from .conftest import FAST


async def observe(loaded, names=None, only=None):
    ex = loaded.registry.executor("windows")
    out = {}
    for t in loaded.targets:
        if names is None or t.name in names:
            specs = [c for c in loaded.registry.checks_for(t) if only is None or c.id in only]
            out[t.name] = {o.check: o for o in await ex.observe(t, specs, deadline=osiris_budget.after(300))}
    return out


@pytest.mark.parametrize("transport", ["https", "ntlm"])
async def test_every_check_passes_on_a_healthy_practice(lab, agent, transport):
    loaded = agent(transport=transport)
    before = {n: (h.commands_run, h.requests, h.encrypted_requests) for n, h in lab.hosts.items()}
    got = await observe(loaded)
    for name, obs in got.items():
        role = lab.host(name).role
        expected = {c.id for c in checks() if not c.roles or role in c.roles}
        assert set(obs) == expected, name
        assert all(o.status is Status.PASS for o in obs.values()), [o.reason for o in obs.values()]
        # One PowerShell round trip per host, whatever the number of checks.
        assert lab.host(name).commands_run - before[name][0] == 1
        if transport == "https":  # Create, Command, Receive, Delete
            assert lab.host(name).requests - before[name][1] == 4
        else:  # the same four, sealed with NTLM
            assert lab.host(name).encrypted_requests - before[name][2] == 4
    facts = got["ws01"]["windows.firewall.profiles_enabled"].facts
    assert facts["profiles"] == [{"name": p, "enabled": True, "default_inbound": "Block"}
                                 for p in ("Domain", "Private", "Public")]


async def test_breaking_a_setting_flips_exactly_that_check(lab, agent):
    loaded = agent(hosts={"ws01", "ws02"})
    lab.break_setting("ws02", "defender.realtime_enabled")
    lab.set_setting("ws02", "defender.signature_age_days", 12)
    got = await observe(loaded)
    failing = {(n, c) for n, obs in got.items() for c, o in obs.items() if o.status is not Status.PASS}
    assert failing == {("ws02", "windows.defender.realtime_protection")}
    reason = got["ws02"]["windows.defender.realtime_protection"].reason
    assert reason == "Defender: real-time protection off, signatures 12 days old (limit 7)"


async def test_a_unit_that_throws_or_overruns_fails_alone(lab, agent):
    loaded = agent(hosts={"srv01"})
    lab.fail_unit("srv01", "windows.smb.v1_disabled")
    lab.slow_unit("srv01", "windows.bitlocker.os_volume_encrypted", 60_000)  # budget: 30 s
    lab.set_setting("srv01", "defender.installed", False)
    ex = loaded.registry.executor("windows")
    target = loaded.targets[0]
    specs = [dataclasses.replace(c, timeout=0.3) if c.id.startswith("windows.bitlocker") else c
             for c in loaded.registry.checks_for(target)]
    got = {o.check: o for o in await ex.observe(target, specs, deadline=osiris_budget.after(300))}
    assert got["windows.firewall.profiles_enabled"].status is Status.PASS
    assert got["windows.smb.v1_disabled"].status is Status.ERROR
    assert got["windows.smb.v1_disabled"].reason == "RuntimeException: chaos: windows.smb.v1_disabled was made to throw on this host"
    assert got["windows.bitlocker.os_volume_encrypted"].reason == "TimeoutException: timed out after 300 ms"
    assert got["windows.defender.realtime_protection"].reason.startswith(
        "CommandNotFoundException: The term 'Get-MpComputerStatus' is not recognized")


async def test_a_fragment_the_lab_cannot_run_is_an_error_not_a_success(lab, agent):
    loaded = agent(hosts={"ws01"})
    target = loaded.targets[0]
    fw = next(c for c in checks() if c.id == "windows.firewall.profiles_enabled")
    v9 = dataclasses.replace(fw, script=fw.script.replace("profiles_enabled/v1", "profiles_enabled/v9"))
    got = await loaded.registry.executor("windows").observe(target, [v9], deadline=osiris_budget.after(300))
    assert got[0].status is Status.ERROR and "no emulation of check windows.firewall.profiles_enabled/v9" in got[0].reason
    broken = dataclasses.replace(fw, script="Get-NetFirewallProfile")
    got = await loaded.registry.executor("windows").observe(target, [broken], deadline=osiris_budget.after(300))
    assert got[0].status is Status.ERROR and "must start with the line '# osiris-check:" in got[0].reason


async def test_parameters_arrive_as_data_whatever_they_contain(lab, agent):
    loaded = agent(hosts={"ws01", "ws02"})
    nasty = "Public'; Set-NetFirewallProfile -Enabled False; $(whoami) \"`"
    ex = loaded.registry.executor("windows")
    sent = []
    real = loaded.ctx.run_blocking

    async def spy(fn, *args):
        sent.append(args[2])  # the shell environment of the round trip
        return await real(fn, *args)

    loaded.ctx.run_blocking = spy
    fw = next(c for c in checks() if c.id == "windows.firewall.profiles_enabled")
    results = []
    for t, profiles in zip(loaded.targets, (["Public"], [nasty])):
        results += await ex.observe(t, [dataclasses.replace(fw, params={"profiles": profiles})], deadline=osiris_budget.after(300))
    assert [o.status for o in results] == [Status.PASS, Status.FAIL]
    assert results[1].reason == f"firewall profiles not reported: {nasty}"  # the value arrived intact
    scripts = [{k: v for k, v in env.items() if k.startswith("OSIRIS_SCRIPT")} for env in sent]
    assert scripts[0] == scripts[1]  # byte-identical script for both hosts and both values
    assert sent[0]["OSIRIS_PARAMS_0"] != sent[1]["OSIRIS_PARAMS_0"]


async def test_a_batch_too_large_for_one_envelope_is_split(lab, agent):
    loaded = agent(hosts={"dc01"}, settings={"max_envelope_kb": 32})

    @emulation.check("windows.test.padded_a", 1)
    @emulation.check("windows.test.padded_b", 1)
    @emulation.check("windows.test.padded_c", 1)
    def padded(host, params):
        return {"n": params["n"]}

    specs = [CheckSpec(id=f"windows.test.padded_{x}", title="padded", target_kind="windows", hipaa=("164.312(b)",),
                       script=f"# osiris-check: windows.test.padded_{x}/v1\n# {'pad ' * 2000}\nparam($P)\n@{{ n = $P.n }}",
                       params={"n": i}, evaluate=lambda f, p: Verdict(Status.PASS if f["n"] == p["n"] else Status.FAIL, "n"))
             for i, x in enumerate("abc")]
    before = lab.host("dc01").commands_run
    got = await loaded.registry.executor("windows").observe(loaded.targets[0], specs, deadline=osiris_budget.after(300))
    assert [o.status for o in got] == [Status.PASS] * 3
    assert lab.host("dc01").commands_run - before == 2  # 8 KB fragments: two fit in a 32 KB envelope, not three


async def test_a_host_split_into_batches_ends_within_the_engines_budget(lab, agent):
    # The engine gives observe() one deadline, the sum of the checks' budgets
    # + 30 s (osiris.budget), and then cancels it, discarding every result. Per batch the executor allows
    # its checks' budgets + script_overhead (up to 600 s); over several
    # batches the host must still end in time, keeping what finished.
    import asyncio

    from osiris_windows import executor as winex

    loaded = agent(hosts={"dc01"}, settings={"max_envelope_kb": 32, "script_overhead": 600})
    names = "abcd"
    for x in names:
        emulation.check(f"windows.test.budget_{x}", 1)(lambda host, params: {"n": params["n"]})
    specs = [CheckSpec(id=f"windows.test.budget_{x}", title="padded", target_kind="windows", hipaa=("164.312(b)",),
                       script=f"# osiris-check: windows.test.budget_{x}/v1\n# {'pad ' * 2000}\nparam($P)\n@{{ n = $P.n }}",
                       params={"n": i}, timeout=1,
                       evaluate=lambda f, p: Verdict(Status.PASS if f["n"] == p["n"] else Status.FAIL, "n"))
             for i, x in enumerate(names)]
    budget = sum(c.timeout for c in specs) + 30.0  # what osiris.engine allows a target
    # Each powershell.exe start takes 21.2 s: the first batch (two checks)
    # uses most of the host's budget, the second could not finish in what is
    # left. The host ends 24 s after observe() starts (34 - CLEANUP_RESERVE)
    # and a batch needs MIN_BATCH_START = 3 s left to start, so the first
    # batch ends after 21 s whatever the load (its start latency alone is
    # 21.2 s) and has 1.8 s for everything else before its deadline.
    lab.set_latency("dc01", ps_start=21.2)
    before = lab.host("dc01").commands_run
    started = time.monotonic()
    deadline = osiris_budget.for_checks(c.timeout for c in specs)
    assert osiris_budget.remaining(deadline) == pytest.approx(budget, abs=1)
    got = await asyncio.wait_for(loaded.registry.executor("windows").observe(loaded.targets[0], specs,
                                                                              deadline=deadline), budget)
    took = time.monotonic() - started
    assert took < budget - winex.CLEANUP_RESERVE + 1
    assert lab.host("dc01").commands_run - before == 1
    by_id = {o.check: o for o in got}
    assert [by_id[f"windows.test.budget_{x}"].status for x in names] == [Status.PASS] * 2 + [Status.ERROR] * 2
    assert {by_id[f"windows.test.budget_{x}"].reason for x in "cd"} == {
        "not run: the host's time budget (34 s) was used up by 1 earlier batch of 2"}


async def test_runbook_heals_and_the_check_passes_again(lab, agent):
    loaded = agent(hosts={"ws03"})
    lab.break_setting("ws03", "firewall.private.enabled")
    ex = loaded.registry.executor("windows")
    target = loaded.targets[0]
    fw = [c for c in loaded.registry.checks_for(target) if c.id == "windows.firewall.profiles_enabled"]
    assert (await ex.observe(target, fw, deadline=osiris_budget.after(300)))[0].reason == "firewall profiles disabled: Private"
    rb = loaded.registry.runbooks["windows.firewall.enable_profiles"].spec
    # PROFILES (which windows-baseline uses too) is what Windows (the lab) accepts.
    res = await ex.run_runbook(target, rb, {"profiles": list(PROFILES)}, deadline=osiris_budget.after(300))
    assert res.ok and res.output == {"profiles": ["Domain", "Private", "Public"], "changed": ["Private"]}
    assert (await ex.observe(target, fw, deadline=osiris_budget.after(300)))[0].status is Status.PASS
    bad = await ex.run_runbook(target, rb, {"profiles": ["Lobby"]}, deadline=osiris_budget.after(300))
    assert not bad.ok and "does not belong to the set" in bad.detail


async def test_transient_failures_are_retried(lab, agent):
    loaded = agent(hosts={"dc01"})
    for kind in ("http500", "reset", "operation_timeout"):
        lab.inject_fault("dc01", kind, count=1)
        got = await observe(loaded, only={"windows.smb.v1_disabled"})
        assert got["dc01"]["windows.smb.v1_disabled"].status is Status.PASS, kind
    lab.inject_fault("dc01", "http500", count=5)
    o = (await observe(loaded, only={"windows.smb.v1_disabled"}))["dc01"]["windows.smb.v1_disabled"]
    assert o.status is Status.ERROR
    assert o.reason.endswith("/wsman: HTTP 500 from the WinRM service after 3 attempts")


@pytest.mark.parametrize("kind", ["reset", "http500"])
async def test_a_runbook_whose_command_reply_is_lost_runs_once(lab, agent, kind):
    # The host accepts the Command and starts the script, then the reply is
    # lost: the runbook may be running, so it must not be sent again.
    loaded = agent(hosts={"ws03"})
    lab.break_setting("ws03", "firewall.private.enabled")
    ex = loaded.registry.executor("windows")
    rb = loaded.registry.runbooks["windows.firewall.enable_profiles"].spec
    before = lab.host("ws03").commands_run
    lab.inject_fault("ws03", kind, count=1, action="Command")
    res = await ex.run_runbook(loaded.targets[0], rb, {"profiles": ["Domain", "Private", "Public"]}, deadline=osiris_budget.after(300))
    assert lab.host("ws03").commands_run - before == 1
    assert not res.ok
    what = "connection reset by the host" if kind == "reset" else "HTTP 500 from the WinRM service"
    assert res.detail == (f"WinRM {lab.host('ws03').endpoint('https')}: {what} after the command was sent: it may "
                          "have run on the host, so it was not sent again; check the host before running it again")
    if kind == "reset":  # the connection broke: no Delete follows, the script runs to its end
        deadline = time.monotonic() + 60  # the script runs on in the lab's thread; a loaded machine may be slow
        while lab.host("ws03").state["firewall.private.enabled"] is not True and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert lab.host("ws03").state["firewall.private.enabled"] is True


async def test_a_runbook_is_retried_when_the_failure_came_before_the_command(lab, agent):
    loaded = agent(hosts={"ws03"})
    ex = loaded.registry.executor("windows")
    rb = loaded.registry.runbooks["windows.firewall.enable_profiles"].spec
    before = lab.host("ws03").commands_run
    lab.inject_fault("ws03", "reset", count=1, action="Create")
    res = await ex.run_runbook(loaded.targets[0], rb, {"profiles": ["Domain", "Private", "Public"]}, deadline=osiris_budget.after(300))
    assert res.ok, res.detail
    assert lab.host("ws03").commands_run - before == 1


async def test_a_check_batch_whose_command_reply_is_lost_is_retried(lab, agent):
    loaded = agent(hosts={"dc01"})
    before = lab.host("dc01").commands_run
    lab.inject_fault("dc01", "reset", count=1, action="Command")
    o = (await observe(loaded, only={"windows.smb.v1_disabled"}))["dc01"]["windows.smb.v1_disabled"]
    assert o.status is Status.PASS, o.reason  # checks are read-only: running twice is harmless
    assert lab.host("dc01").commands_run - before == 2


async def test_unreachable_hosts_do_not_hold_up_the_sweep(lab, agent, tmp_path):
    loaded = agent()
    lab.inject_fault("ws02", "hang", duration=600)  # a request that arrives hangs until the lab stops
    lab.inject_fault("ws03", "refused")
    hung_before = lab.host("ws02").requests
    store = Store(loaded.ctx.state_dir)
    engine = Engine(loaded.registry, store, loaded.targets, max_concurrent_targets=8)
    started = time.monotonic()
    obs = await engine.sweep(force=True)
    took = time.monotonic() - started
    by_host = {}
    for o in obs:
        by_host.setdefault(o.target, []).append(o)
    for name in ("dc01", "srv01", "ws01"):
        assert all(o.status is Status.PASS for o in by_host[name]), name
    assert {o.status for o in by_host["ws02"]} == {Status.ERROR}
    assert {o.reason for o in by_host["ws02"]} == {
        f"WinRM {lab.host('ws02').endpoint('https')}: the host stopped answering (HTTP read timed out)"}
    assert {o.reason for o in by_host["ws03"]} == {
        f"WinRM {lab.host('ws03').endpoint('https')}: connection refused after 3 attempts"}
    # Only the hung host took its read timeout, once: one request, not
    # retried, no clean-up requests to a host that stopped answering (and
    # its reason above is the read timeout, not the engine's budget). No
    # upper bound on the time: a loaded machine only makes the sweep slower.
    # The healthy hosts did not wait for it: their observations came first.
    read_timeout = winclient.read_timeout(FAST["operation_timeout"])
    assert lab.host("ws02").requests - hung_before == 1
    assert took > read_timeout * 0.9
    assert max(o.observed_at for n in ("dc01", "srv01", "ws01") for o in by_host[n]) < min(
        o.observed_at for o in by_host["ws02"])
    assert len(store.latest()) == len(obs)


async def test_secrets_stay_out_of_observations_and_logs(lab, agent, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = tmp_path / "wrong"
    wrong.write_text("osiris:Sup3r-Secret-Passw0rd\n")
    loaded = agent(hosts={"ws01"})
    loaded.ctx.secrets.files[lab.credential_name] = wrong
    o = (await observe(loaded, only={"windows.smb.v1_disabled"}))["ws01"]["windows.smb.v1_disabled"]
    assert o.status is Status.ERROR and o.reason.endswith("the host rejected the credentials (HTTP 401)")
    loaded.ctx.secrets.files[lab.credential_name] = lab.credential_file
    lab.inject_fault("ws01", "http500", count=10)
    await observe(loaded, only={"windows.smb.v1_disabled"})
    text = caplog.text + repr(o)
    assert "Sup3r-Secret-Passw0rd" not in text and lab.password not in text
    assert "retrying" in caplog.text


async def test_a_host_with_a_bad_secret_errs_alone(lab, agent):
    loaded = agent(hosts={"ws01", "ws02"})
    ex = loaded.registry.executor("windows")
    t = next(t for t in loaded.targets if t.name == "ws01")
    lonely = Target(t.name, t.kind, t.role, t.address, "no-such-secret", t.options)
    got = await ex.observe(lonely, checks()[:1], deadline=osiris_budget.after(300))
    assert got[0].status is Status.ERROR and "no-such-secret" in got[0].reason


def test_runbook_fragments_compose(lab):
    # Runbooks travel in the same batch format (a batch of one unit).
    for rb in runbooks():
        text = script.compose((script.unit("runbook", rb.id, rb.script),))
        assert f"# osiris-runbook: {rb.id}/v1" in text


async def test_a_certificate_from_another_ca_is_refused_not_retried(lab, agent, tmp_path):
    from osiris_lab import pki

    other = pki.create(tmp_path / "other")
    t = lab.host("ws01").target()
    t["options"]["ca_file"] = str(other.ca_file)
    loaded = agent(targets=[t])
    before = lab.host("ws01").requests
    o = (await observe(loaded, only={"windows.smb.v1_disabled"}))["ws01"]["windows.smb.v1_disabled"]
    assert o.status is Status.ERROR and "the host's certificate did not verify" in o.reason
    assert lab.host("ws01").requests == before  # refused at the handshake, once


def test_one_verifying_tls_context_per_ca_bundle_reloaded_when_it_changes(tmp_path):
    import os
    import ssl

    from osiris_lab import pki
    from osiris_windows.client import verifying_context

    ca = pki.create(tmp_path / "a").ca_file
    ctx = verifying_context(str(ca))
    assert ctx is verifying_context(str(ca))  # loaded once, not per connection
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    ca.write_bytes(pki.create(tmp_path / "b").ca_file.read_bytes())
    os.utime(ca, ns=(1, 1))
    assert verifying_context(str(ca)) is not ctx  # a renewed bundle is read again
