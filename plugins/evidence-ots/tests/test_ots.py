"""OpenTimestamps anchoring: a local calendar whose answers are real
timestamps, and a real published proof with its real Bitcoin block header.

The published proof is ``examples/hello-world.txt.ots`` of the
opentimestamps-client project (LGPL-3.0), the timestamp of the file
"Hello World!\\n", as printed in hexadecimal in the javascript-opentimestamps
README; the header is that of Bitcoin block 358391 (hash
000000000000000003e892881a8cdcdc117c06d444057c98b6f04a9ee75a2319), public
chain data. Both are used here as test data.
"""

import asyncio
import hashlib
import subprocess
import sys
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from osiris.config import ConfigError, SiteSettings
from osiris.evidence.export import export
from osiris.evidence.outbox import Outbox
from osiris.evidence.service import EvidenceService
from osiris.evidence.settings import EvidenceSettings
from osiris_evidence_ots import plugin, proofs
from osiris_evidence_ots.plugin import OtsSink, Settings

from .local_calendar import LocalCalendar

HELLO = b"Hello World!\n"
HELLO_OTS = bytes.fromhex(
    "004f70656e54696d657374616d7073000050726f6f6600bf89e2e884e89294010803ba204e50d126e4674c005e04d82e84c2136678"
    "0af1f43bd54a37816b6ab34003f1c8010100000001e482f9d32ecc3ba657b69d898010857b54457a90497982ff56f97c4ec58e6f98"
    "010000006b483045022100b253add1d1cf90844338a475a04ff13fc9e7bd242b07762dea07f5608b2de367022000b268ca9c3342b3"
    "769cdd062891317cdcef87aac310b6855e9d93898ebbe8ec0121020d8e4d107d2b339b0050efdd4b4a09245aa056048f125396374e"
    "a6a2ab0709c6ffffffff026533e605000000001976a9140bf057d40fbba6744862515f5b55a2310de5772f88aca08601000000000019"
    "76a914f00688ac000000000808f120a987f716c533913c314c78e35d35884cac943fa42cac49d2b2c69f4003f85f880808f120dec5"
    "5b3487e1e3f722a49b55a7783215862785f4a3acb392846019f71dc64a9d0808f120b2ca18f485e080478e025dab3d464b416c0e1e"
    "cb6629c9aefce8c8214d0424320808f02011b0e90661196ff4b0813c3eda141bab5e91604837bdf7a0c9df37db0e3a11980808f020"
    "c34bc1a4a1093ffd148c016b1e664742914e939efabe4d3d356515914b26d9e20808f020c3e6e7c38c69f6af24c2be34ebac48257e"
    "de61ec0a21b9535e4443277be306460808f1200798bf8606e00024e5d5d54bf0c960f629dfb9dad69157455b6f2652c0e8de810808"
    "f0203f9ada6d60baa244006bb0aad51448ad2fafb9d4b6487a0999cff26b91f0f5360808f120c703019e959a8dd3faef7489bb328b"
    "a485574758e7091f01464eb65872c975c80808f020cbfefff513ff84b915e3fed6f9d799676630f8364ea2a6c7557fad94a5b5d788"
    "0808f1200be23709859913babd4460bbddf8ed213e7c8773a4b1face30f8acfdf093b7050808000588960d73d7190103f7ef15")
BLOCK_358391 = bytes.fromhex(
    "02000000b96394585a281b7e5f438fd1c9ed492645a1fd61cb3802040000000000000000007ee445d23ad061af4a36b809501fab1a"
    "c4f2d7e7a739817dd0cbb7ec661b8a1e376755f58616186272def6")
BLOCK_HASH = "000000000000000003e892881a8cdcdc117c06d444057c98b6f04a9ee75a2319"


def test_the_published_proof_verifies_against_the_real_block_header():
    assert hashlib.sha256(hashlib.sha256(BLOCK_358391).digest()).digest()[::-1].hex() == BLOCK_HASH
    [anchor] = proofs.verify(HELLO, HELLO_OTS, {358391: BLOCK_358391})
    assert (anchor.height, anchor.time, anchor.block_hash) == (358391, 1432827678, BLOCK_HASH)
    assert anchor.when == "2015-05-28T15:41:18Z"


def test_the_published_proof_fails_for_another_file_or_header():
    with pytest.raises(proofs.ProofError, match="another file"):
        proofs.verify(b"Hello World?\n", HELLO_OTS, {358391: BLOCK_358391})
    forged = bytearray(BLOCK_358391)
    forged[40] ^= 1  # a bit of the Merkle root
    with pytest.raises(proofs.ProofError, match="proof of work"):
        proofs.verify(HELLO, HELLO_OTS, {358391: bytes(forged)})
    with pytest.raises(proofs.ProofError, match="merkleroot"):
        proofs.verify(HELLO, HELLO_OTS, {358391: bytes(forged)}, require_pow=False)
    with pytest.raises(proofs.ProofError, match="no header supplied for block"):
        proofs.verify(HELLO, HELLO_OTS, {358390: BLOCK_358391})
    with pytest.raises(proofs.ProofError, match="not an OpenTimestamps proof"):
        proofs.verify(HELLO, b"garbage", {})


def test_the_cli_verifies_offline(tmp_path):
    (tmp_path / "hello.txt").write_bytes(HELLO)
    (tmp_path / "hello.txt.ots").write_bytes(HELLO_OTS)
    (tmp_path / "358391.hex").write_text(BLOCK_358391.hex() + "\n")
    r = CliRunner().invoke(plugin.ots_group, ["verify", str(tmp_path / "hello.txt"), str(tmp_path / "hello.txt.ots"),
                                              "--header", f"358391=@{tmp_path / '358391.hex'}"])
    assert r.exit_code == 0 and f"ok: Bitcoin block 358391 ({BLOCK_HASH})" in r.output
    assert "2015-05-28T15:41:18Z" in r.output
    r = CliRunner().invoke(plugin.ots_group, ["verify", str(tmp_path / "hello.txt"), str(tmp_path / "hello.txt.ots")])
    assert r.exit_code == 1 and "no header supplied for block(s) 358391" in r.output
    info = CliRunner().invoke(plugin.ots_group, ["info", str(tmp_path / "hello.txt.ots")])
    assert "03ba204e50d126e4674c005e04d82e84c21366780af1f43bd54a37816b6ab340" in info.output
    assert "BitcoinBlockHeaderAttestation(358391)" in info.output


@pytest.fixture
async def calendars():
    cals = [LocalCalendar(), LocalCalendar()]
    for c in cals:
        await c.start()
    yield cals
    for c in cals:
        await c.stop()


def service(tmp_path):
    ctx = SimpleNamespace(state_dir=tmp_path, site=SiteSettings(id="clinic", appliance="box"), agent_version="0",
                          registry=None)
    return EvidenceService.open(ctx, EvidenceSettings())


async def test_checkpoints_are_anchored_pending_then_upgraded_and_verify(tmp_path, calendars):
    svc = service(tmp_path)
    settings = Settings(enabled=True, calendars=[c.url for c in calendars], min_calendars=2, min_interval=0)
    sink = OtsSink(svc, settings)
    svc.outbox = Outbox(svc.log, [sink])  # driven by hand here, not by the background loops
    for i in range(5):
        await svc.record("sweep", {"i": i})
    cp = await svc.checkpoint()
    await svc.outbox.drain()
    [pending] = await svc.attestations("ots")
    assert pending["size"] == cp.size and not pending["complete"]
    assert pending["detail"] == "pending at 2 calendar(s)"
    assert all(c.submissions == 1 for c in calendars)
    with pytest.raises(proofs.ProofError, match="still pending"):
        proofs.verify(cp.note, pending["data"], {})
    assert await sink.maintain() == 0  # no block yet: still pending, nothing lost
    header = calendars[0].mine(840000)
    assert await sink.maintain() == 1
    [done] = await svc.attestations("ots")
    assert done["complete"] and done["detail"] == "anchored in Bitcoin"
    [anchor] = proofs.verify(cp.note, done["data"], {840000: header}, require_pow=False)
    assert anchor.height == 840000
    with pytest.raises(proofs.ProofError, match="proof of work"):
        proofs.verify(cp.note, done["data"], {840000: header})  # a made-up header is not mainnet
    with pytest.raises(proofs.ProofError, match="another file"):
        proofs.verify(cp.note.replace(b"time ", b"time 0"), done["data"], {840000: header}, require_pow=False)
    # The export carries the proof next to the checkpoint it dates.
    out = tmp_path / "audit.zip"
    export(svc.log, out, 0, cp.size)
    import zipfile
    z = zipfile.ZipFile(out)
    assert z.read(f"checkpoints/{cp.size}.note.ots") == done["data"]
    assert z.read(f"checkpoints/{cp.size}.note") == cp.note
    await svc.close()


async def test_too_few_calendars_means_retry_later_and_close_checkpoints_are_skipped(tmp_path, calendars):
    svc = service(tmp_path)
    calendars[1].down = True
    sink = OtsSink(svc, Settings(enabled=True, calendars=[c.url for c in calendars], min_calendars=2,
                                 min_interval=3600))
    svc.outbox = Outbox(svc.log, [sink])  # driven by hand here, not by the background loops
    await svc.record("sweep", {})
    cp1 = await svc.checkpoint()
    [d] = await svc.outbox.drain()
    assert not d.ok and "1 of 2 required calendars" in d.error and "503" in d.error
    assert await svc.attestations("ots") == []
    calendars[1].down = False
    [d] = await svc.outbox.drain(now=10**10)
    assert d.ok and [a["size"] for a in await svc.attestations("ots")] == [cp1.size]
    await svc.record("sweep", {})
    await svc.checkpoint()
    [d] = await svc.outbox.drain()
    assert d.ok  # acknowledged, not anchored: within min_interval of the last anchor
    assert [a["size"] for a in await svc.attestations("ots")] == [cp1.size]
    await svc.close()


def test_settings_and_hook(tmp_path):
    from osiris.app import load
    with pytest.raises(ConfigError, match=r"plugins.evidence-ots.*calendars"):
        load(config_data={"state_dir": str(tmp_path), "plugins": {"evidence-ots": {"calendars": ["ftp://x"]}}})
    for bad in ("https://", "https://cal.example:99999"):  # no host; a port out of range
        with pytest.raises(ConfigError, match=r"calendar .*: expected an absolute https:// URL"):
            load(config_data={"state_dir": str(tmp_path), "plugins": {"evidence-ots": {"calendars": [bad]}}})
    loaded = load(config_data={"state_dir": str(tmp_path)})
    assert plugin.osiris_evidence_sinks(loaded.ctx) is None  # off unless enabled


def test_loading_the_plugin_does_not_import_opentimestamps(tmp_path):
    """The agent loads every plugin at start-up; OpenTimestamps and
    bitcoinlib (~90 ms) wait until a sink or an `osiris ots` command needs them."""
    code = ("import sys; from osiris.app import load; "
            f"loaded = load(config_data={{'state_dir': {str(tmp_path)!r}}}, environ={{'OSIRIS_PLUGINS': 'evidence-ots'}}); "
            "assert 'evidence-ots' in loaded.pm.infos; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'opentimestamps', 'bitcoin'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture
async def four_calendars():
    cals = [LocalCalendar() for _ in range(4)]
    for c in cals:
        await c.start()
    yield cals
    for c in cals:
        await c.stop()


async def test_calendars_are_asked_at_once_within_one_deadline(four_calendars):
    cals = four_calendars
    urls = [c.url for c in cals]
    # No calendar answers before all four have been asked: asked one at a
    # time, the first would wait out the deadline and the stamp would fail.
    all_asked = asyncio.Event()

    def arrived():
        if sum(c.arrivals for c in cals) == len(cals):
            all_asked.set()

    for c in cals:
        c.hold, c.on_arrival = all_asked, arrived
    _, ok, errors = await asyncio.wait_for(
        asyncio.to_thread(proofs.stamp, b"checkpoint", urls, min_calendars=4, timeout=30.0), 120)
    assert ok == urls and errors == []
    assert all(c.submissions == 1 for c in cals)
    # A calendar that does not answer by the deadline is given up on, by
    # name, at the deadline; the others count. It stalls until the test
    # ends, far past the deadline, which is far longer than the others need.
    stalled = asyncio.Event()
    for c in cals:
        c.hold, c.on_arrival = None, None
    cals[3].hold = stalled
    _, ok, errors = await asyncio.wait_for(
        asyncio.to_thread(proofs.stamp, b"checkpoint", urls, min_calendars=2, timeout=5.0), 120)
    assert ok == urls[:3] and errors == [f"{urls[3]}: no answer within 5 s"]
    assert cals[3].arrivals == 2 and cals[3].submissions == 1  # asked, and the second time never answered


@pytest.fixture
async def slow_calendars():
    cals = [LocalCalendar() for _ in range(4)]
    for c in cals:
        await c.start()
        c.delay = 1.5
    yield cals
    for c in cals:
        await c.stop()


async def test_slow_calendars_are_anchored_inside_the_sinks_delivery_timeout(tmp_path, slow_calendars):
    """Four calendars of 1.5 s each under an outbox timeout of 1 s (as four
    calendars of 15 s under the default 30 s): delivered, each asked once,
    because the sink's own delivery timeout, above its calendar deadline
    (10 s, far above the calendars' 1.5 s), is what the outbox allows."""
    svc = service(tmp_path)
    sink = OtsSink(svc, Settings(enabled=True, calendars=[c.url for c in slow_calendars], min_calendars=2,
                                 min_interval=0, timeout=10.0))
    assert sink.delivery_timeout > 10.0
    svc.outbox = Outbox(svc.log, [sink], timeout=1.0)
    assert svc.outbox.timeout_for(sink.name) == sink.delivery_timeout
    await svc.record("sweep", {})
    cp = await svc.checkpoint()
    [d] = await svc.outbox.drain()
    assert d.ok, d.error
    [a] = await svc.attestations("ots")
    assert a["size"] == cp.size and a["detail"] == "pending at 4 calendar(s)"
    assert [c.submissions for c in slow_calendars] == [1, 1, 1, 1]
    await svc.close()
