"""Canonical JSON: the fast path must be byte-for-byte the rfc8785 library."""

import enum
import json
import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from osiris.evidence.canonical import _fast_ok, canonical, canonical_reference, to_json

AWKWARD = [
    {"b": 1, "a": 2, "": 3},
    {"\u20ac": 1, "\r": 2, "1": 3, "\U0001f600": 4, "\ufb33": 5},  # RFC 8785 section 3.2.3 sort example
    {"s": "\x00\x01\x1f\x7f\"\\/\b\f\n\r\t\u2028\u2029\ufeff"},
    {"n": [0, -0.0, 1.0, -1.5, 0.1, 1e-4, 9.999e15, 1e16, 1e21, 1e-7, 5e-324, 1.7976931348623157e308, 333333333.33333329]},
    {"i": [2**53 - 1, -(2**53 - 1), 0, 17]},
    [None, True, False, [], {}, [[[]]]],
    {"nested": {"z": {"y": {"x": "deep"}}, "a": [1, "two", 3.25]}},
    "just a string",
    4.5,
]


@pytest.mark.parametrize("value", AWKWARD)
def test_canonical_equals_the_reference_library(value):
    v = to_json(value)
    assert canonical(v) == canonical_reference(v)


def test_rfc8785_section_3_2_2_example():
    # The RFC's own example of numbers and escapes, and its expected output.
    value = {"numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
             "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/", "literals": [None, True, False]}
    expected = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
                '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}').encode()
    assert canonical(to_json(value)) == expected


def test_random_documents_agree_and_the_fast_path_is_used():
    rnd = random.Random(8785)
    chars = ['a', 'Z', '"', '\\', '\n', '\t', '\x00', '\x1f', '\x7f', 'é', '€', '\u2028', '\ue000', '\U0001F600', ' ']

    def rs():
        return "".join(rnd.choice(chars) for _ in range(rnd.randint(0, 6)))

    def rv(d=0):
        r = rnd.random()
        if d > 3 or r < 0.3:
            return rnd.choice([rs(), rnd.randint(-2**53 + 1, 2**53 - 1), rnd.random() * 10 ** rnd.randint(-6, 18),
                               True, None, float(rnd.randint(-1000, 1000)), 1e-7, 1e16])
        if r < 0.65:
            return {rs(): rv(d + 1) for _ in range(rnd.randint(0, 4))}
        return [rv(d + 1) for _ in range(rnd.randint(0, 4))]

    fast = 0
    for _ in range(3000):
        v = to_json(rv())
        assert canonical(v) == canonical_reference(v)
        fast += _fast_ok(v)
    assert 1000 < fast < 3000  # both paths exercised


class Color(enum.Enum):
    RED = "red"


class Thing:
    def __str__(self) -> str:
        return "a thing"


def test_to_json_is_deterministic_and_total():
    dt = datetime(2024, 5, 1, 10, 22, 33, 123456, tzinfo=timezone(timedelta(hours=2)))
    v = to_json({"t": dt, "d": date(2024, 5, 1), "p": Path("/var/lib/osiris"), "e": Color.RED,
                 "s": {3, 1, 2}, "tup": (1, 2), "b": b"\x00\xff", "big": 2**64, "nan": float("nan"),
                 "inf": float("-inf"), "five": 5.0, 1: "int key", "bad": "x\ud800y", "obj": Thing()})
    assert v["t"] == "2024-05-01T08:22:33.123456Z"
    assert v["d"] == "2024-05-01" and v["p"] == "/var/lib/osiris" and v["e"] == "red"
    assert v["s"] == [1, 2, 3] and v["tup"] == [1, 2] and v["b"] == "AP8="
    assert v["big"] == str(2**64) and v["nan"] == "NaN" and v["inf"] == "-Infinity"
    assert v["five"] == 5 and type(v["five"]) is int
    assert v["1"] == "int key" and v["obj"] == "a thing"
    assert "\ufffd" in v["bad"] and v["bad"].startswith("x")
    out = canonical(v)
    assert json.loads(out)["five"] == 5
    assert canonical(to_json({"s": {"b", "a"}})) == canonical(to_json({"s": {"a", "b"}}))


def test_str_and_int_valued_enums_and_subclasses_become_their_values():
    from osiris.records import Status

    class Level(int, enum.Enum):
        HIGH = 3

    class Name(str):
        pass

    v = to_json({"status": Status.PASS, "level": Level.HIGH, "name": Name("dc01"), "flag": True})
    assert v == {"status": "pass", "level": 3, "name": "dc01", "flag": True}
    assert [type(x) for x in v.values()] == [str, int, str, bool]
    assert canonical(v) == b'{"flag":true,"level":3,"name":"dc01","status":"pass"}'
