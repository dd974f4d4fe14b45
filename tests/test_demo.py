"""`make demo` runs `osiris-lab demo`: the agent once on a fresh emulated
practice. The demo must keep working and keep telling the truth."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from osiris.store import Store


def test_demo_heals_the_broken_firewall_and_verifies_its_evidence(tmp_path):
    exe = shutil.which("osiris-lab") or str(Path(sys.executable).with_name("osiris-lab"))
    res = subprocess.run([exe, "demo", "--dir", str(tmp_path / "demo")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "firewall.domain.enabled on dc01 is now True" in res.stdout
    assert "Evidence: ok:" in res.stdout
    assert f"Compliance report: {tmp_path / 'demo' / 'report.html'} and {tmp_path / 'demo' / 'report.pdf'}" in res.stdout
    text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "demo" / "report.pdf"), "-"], capture_output=True,
                          text=True, check=True).stdout
    assert "Demo Family Practice" in text and "164.312(e)(1)" in text
    healed = text[text.index("Healed automatically"):text.index("Fixed by a person, recovered")]
    assert "windows.firewall.profiles_enabled" in healed  # the firewall the demo broke, healed at L1
    config = json.loads((tmp_path / "demo" / "config.json").read_text())
    store = Store(config["state_dir"])
    try:
        incidents = store.incidents(None)
        assert store.incidents("open") == []
        healed = {(i.target, i.check_id) for i in incidents if (i.outcome, i.tier) == ("healed", "L1")}
        assert ("dc01", "windows.firewall.profiles_enabled") in healed
        # the appliance healed its own loose state directory through the selfcheck plugin's shipped rule
        assert ("appliance", "appliance.files.private") in healed
    finally:
        store.close()
