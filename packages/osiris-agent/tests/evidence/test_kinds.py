"""The bundle kinds the code records are the ones bundle.KIND and the docs list."""

import re
from pathlib import Path

from osiris.evidence.bundle import KIND

ROOT = Path(__file__).resolve().parents[4]
SRC = ROOT / "packages" / "osiris-agent" / "src" / "osiris"
# evidence.record("kind", ...), service.record_now("kind", ...), ladder._evidence("kind", ...)
_RECORDED = re.compile(r"""(?:\.record|\.record_now|\._evidence)\(\s*["']([a-z_.]+)["']""")


def recorded_kinds() -> set[str]:
    kinds = set()
    for path in SRC.rglob("*.py"):
        kinds |= set(_RECORDED.findall(path.read_text(encoding="utf-8")))
    return kinds


def test_every_kind_the_code_records_is_listed_and_nothing_else():
    kinds = recorded_kinds()
    assert {"sweep", "observation", "healing_attempt", "rule_decision"} <= kinds, kinds
    assert kinds == KIND


def test_the_docs_name_the_recorded_kinds_and_record_only_those():
    doc = (ROOT / "docs" / "evidence.md").read_text(encoding="utf-8")
    for kind in KIND:
        assert f"`{kind}`" in doc, kind
    examples = set(re.findall(r"""evidence\.record\(\s*["']([a-z_.]+)["']""", doc))
    assert examples and examples <= KIND, examples
