"""The compliance report: its figures from a known history, and the files
`osiris report` writes (HTML, PDF checked with pdftotext, the signed
manifest, the report bundle in the evidence log)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from osiris.evidence.log import EvidenceLog
from osiris.paths import DataPaths
from osiris.records import Observation, Status
from osiris.report import build, render_html
from osiris.store import Store, iso

OSIRIS = Path(sys.executable).with_name("osiris")
ARTIFACTS = Path(__file__).resolve().parents[3] / ".artifacts" / "report"
T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)
CATALOGUE = {
    "fw.on": SimpleNamespace(title="Firewall is on", hipaa=("164.312(e)(1)",), interval=3600),
    "lock.screen": SimpleNamespace(title="Screen locks", hipaa=("164.312(a)(2)(iii)",), interval=3600),
}


def observe(store, host, check, status, at):
    store.record_many([Observation(host, check, Status(status), f"{check} {status}", {}, at)])


def set_incident_times(store, opened, resolved, outcome, tier):
    """Incidents carry the time they were recorded; a history written at
    once is dated by hand, as if it had happened over days."""
    inc = store.incidents("open")[0]
    store.resolve_incident(inc.id, outcome, tier, f"{outcome} by test")
    with store.transaction() as db:
        db.execute("UPDATE incidents SET opened_at = ?, resolved_at = ? WHERE id = ?",
                   (iso(opened), iso(resolved), inc.id))


@pytest.fixture
def history(tmp_path):
    """Ten days of two hosts: dc01's firewall off for a day (healed at L1)
    and its screen lock failing for the last two days under an exception;
    ws01 silent for three days in the middle."""
    store = Store(tmp_path / "state")
    for host in ("dc01", "ws01"):
        for check in CATALOGUE:
            observe(store, host, check, "pass", T0)
    observe(store, "dc01", "fw.on", "fail", T0 + 2 * DAY)
    set_incident_times(store, T0 + 2 * DAY, T0 + 3 * DAY, "healed", "L1")
    observe(store, "dc01", "fw.on", "pass", T0 + 3 * DAY)
    observe(store, "dc01", "lock.screen", "fail", T0 + 8 * DAY)
    exc = store.add_exception("lock.screen", "dc01", "kiosk in the waiting room", "Dr. Rivera", "msp",
                              iso(T0 + 30 * DAY))
    with store.transaction() as db:
        db.execute("UPDATE exceptions SET created_at = ? WHERE id = ?", (iso(T0 + 8 * DAY), exc["id"]))
    set_incident_times(store, T0 + 8 * DAY, T0 + 8 * DAY, "accepted", "none")
    # every hour had results, except ws01 on days 4-6
    with store.transaction() as db:
        db.execute("DELETE FROM coverage")
        rows = []
        for h in range(10 * 24):
            at = T0 + timedelta(hours=h)
            for host in ("dc01", "ws01"):
                if host == "ws01" and 4 * 24 <= h < 7 * 24:
                    continue
                rows.append((host, iso(at)[:13], 2, 0))
        db.executemany("INSERT INTO coverage (target, hour, observations, errors) VALUES (?, ?, ?, ?)", rows)
    yield store
    store.close()


def make(store):
    return build(store, CATALOGUE, {"dc01": list(CATALOGUE), "ws01": list(CATALOGUE)},
                 {"id": "clinic", "name": "Riverside Family Practice"}, T0, T0 + 10 * DAY, T0 + 10 * DAY,
                 {"dc01": 3600, "ws01": 3600})


def test_time_compliant_episodes_and_how_each_ended(history):
    r = make(history)
    dc = next(h for h in r.hosts if h["host"] == "dc01")["figures"]
    # dc01: drifting 1 day of 10, accepted risk the last 2, passing 7
    assert round(dc.percent("passing"), 3) == 70.0
    assert round(dc.percent("drifting"), 3) == 10.0
    assert round(dc.percent("accepted"), 3) == 20.0
    ws = next(h for h in r.hosts if h["host"] == "ws01")["figures"]
    assert ws.percent("passing") == 100.0
    fw = next(s for s in r.specs if s["citation"] == "164.312(e)(1)")
    assert fw["title"] == "Transmission security"
    assert round(fw["figures"].percent(), 3) == 95.0  # dc01 90%, ws01 100%
    [fw_ep, lock_ep] = r.episodes
    assert (fw_ep.host, fw_ep.check, fw_ep.fixed_by, fw_ep.seconds) == ("dc01", "fw.on", "L1", 86400)
    assert (lock_ep.check, lock_ep.end, lock_ep.fixed_by) == ("lock.screen", None, "accepted risk")
    assert [e["reason"] for e in r.exceptions] == ["kiosk in the waiting room"]


def test_a_silent_host_is_an_evidence_gap(history):
    r = make(history)
    assert [(g["host"], g["kind"], g["hours"], g["start"]) for g in r.gaps] == [
        ("ws01", "not reporting", 72, iso(T0 + 4 * DAY)[:13])]


def test_the_html_cites_each_paragraph_and_names_the_practice(history):
    html = render_html(make(history))
    for text in ("Riverside Family Practice", "164.312(e)(1)", "Transmission security", "164.312(a)(2)(iii)",
                 "Automatic logoff", "kiosk in the waiting room", "Dr. Rivera", "Firewall is on", "L1",
                 "verify.py", "openssl pkeyutl -verify"):
        assert text in html, text
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="needs pdftotext (poppler-utils)")
def test_osiris_report_writes_html_and_pdf_with_a_signed_manifest_recorded_as_evidence(write_config, tmp_path):
    cfg = write_config({"site": {"id": "clinic", "name": "Riverside Family Practice"}})
    res = subprocess.run([str(OSIRIS), "-c", str(cfg), "run", "--once"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    for fmt in ("html", "pdf"):
        out = tmp_path / f"report.{fmt}"
        res = subprocess.run([str(OSIRIS), "-c", str(cfg), "report", "--format", fmt, "-o", str(out)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        data = out.read_bytes()
        manifest = json.loads((tmp_path / f"report.{fmt}.manifest.json").read_text())
        assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
        sig = tmp_path / "m.sig"
        sig.write_bytes(base64.b64decode((tmp_path / f"report.{fmt}.manifest.json.sig").read_bytes()))
        check = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey",
                                str(tmp_path / f"report.{fmt}.key.pem"), "-rawin", "-in",
                                str(tmp_path / f"report.{fmt}.manifest.json"), "-sigfile", str(sig)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "report.pdf"), "-"], capture_output=True,
                          text=True, check=True).stdout
    assert "Riverside Family Practice" in text
    assert "164.312(b)" in text and "Audit controls" in text
    assert "Appendix: verifying the evidence" in text
    assert "of host-time fully compliant" in text and re.search(r"\b\d{1,3}\.\d%", text)  # the summary's figures
    if shutil.which("pdftoppm"):  # the first page as a picture, for a person to look at
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", str(tmp_path / "report.pdf"),
                        str(ARTIFACTS / "report-page1")], check=True)
        assert (ARTIFACTS / "report-page1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = EvidenceLog(DataPaths.of(Path(json.loads(cfg.read_text())["state_dir"])).evidence_log, create=False)
    try:
        bundles = [json.loads(e.body) for e in log.iter_entries() if e.kind == "report"]
    finally:
        log.close()
    assert [b["payload"]["format"] for b in bundles] == ["html", "pdf"]
    assert bundles[1]["payload"]["sha256"] == hashlib.sha256((tmp_path / "report.pdf").read_bytes()).hexdigest()
