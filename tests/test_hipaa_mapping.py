"""docs/hipaa-mapping.md is what `osiris checks --format markdown` prints
with every plugin of the workspace installed; regenerate it with
`make hipaa-mapping` when checks change."""

from pathlib import Path

from osiris.app import load
from osiris.cli import control_mapping

REPO = Path(__file__).resolve().parents[1]


def test_committed_mapping_is_current(tmp_path):
    loaded = load(config_data={"state_dir": str(tmp_path)}, environ={})
    try:
        expected = control_mapping(loaded.registry)
    finally:
        loaded.ctx.close()
    committed = (REPO / "docs" / "hipaa-mapping.md").read_text()
    assert committed == expected, "docs/hipaa-mapping.md is stale: run `make hipaa-mapping`"


def test_every_check_cites_hipaa_to_the_paragraph(tmp_path):
    loaded = load(config_data={"state_dir": str(tmp_path)}, environ={})
    try:
        for cid, c in loaded.registry.checks.items():
            assert c.spec.hipaa and all(cite.startswith("164.3") and "(" in cite for cite in c.spec.hipaa), cid
    finally:
        loaded.ctx.close()
