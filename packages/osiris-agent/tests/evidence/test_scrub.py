"""PHI scrubbing, decided by the corpus: no PHI left, no look-alike removed."""

import pytest

from osiris.evidence.scrub import Scrubber, placeholder
from osiris.evidence.settings import ScrubSettings

from .phi_corpus import KEEP, PHI

SCRUBBER = Scrubber()


@pytest.mark.parametrize(("text", "fragments", "kinds"), PHI, ids=[p[0][:40] for p in PHI])
def test_phi_is_removed_and_counted_by_type(text, fragments, kinds):
    out, counts = SCRUBBER.scrub(text)
    for fragment in fragments:
        assert fragment not in out, f"{fragment!r} survived in {out!r}"
    assert set(counts) == kinds
    for kind in kinds:
        assert placeholder(kind) in out


@pytest.mark.parametrize("text", KEEP)
def test_look_alikes_survive_byte_for_byte(text):
    out, counts = SCRUBBER.scrub(text)
    assert out == text
    assert counts == {}


def test_fields_known_to_hold_names_and_identifiers():
    facts = {
        "Patient_Name": "Bob Jones",  # matched case- and punctuation-insensitively
        "patient": {"first": "x"},  # not a string: walked, not replaced
        "guardian": "Jane Jones",
        "DOB": "1970-01-01",
        "phone": 5551234567,  # numbers too
        "password": "hunter2",
        "api_key": "sk-123",
        "name": "DC01",  # a generic "name" is a host here: kept
        "enabled": True,
        "owner": "jane.doe@example.com",
        "users": {"ann@example.com": 1, "bob@example.com": 2},
    }
    out, counts = SCRUBBER.scrub(facts)
    assert out["Patient_Name"] == "[REDACTED:NAME]" and out["guardian"] == "[REDACTED:NAME]"
    assert out["patient"] == {"first": "x"}
    assert out["DOB"] == "[REDACTED:DOB]" and out["phone"] == "[REDACTED:PHONE]"
    assert out["password"] == "[REDACTED:SECRET]" and out["api_key"] == "[REDACTED:SECRET]"
    assert out["name"] == "DC01" and out["enabled"] is True
    assert out["owner"] == "[REDACTED:EMAIL]"
    # Keys are scrubbed too; two keys that become the same placeholder stay apart.
    assert out["users"] == {"[REDACTED:EMAIL]": 1, "[REDACTED:EMAIL]#2": 2}
    assert counts == {"phone": 1, "email": 3, "dob": 1, "name": 2, "secret": 2}
    assert "hunter2" not in repr(out) and "sk-123" not in repr(out)


def test_mrn_pattern_is_configurable():
    settings = ScrubSettings(mrn_patterns=[r"\bMR\d{7}\b"], name_fields=["resident"])
    s = Scrubber.from_settings(settings)
    out, counts = s.scrub({"note": "chart MR1234567 reviewed; MRN: 00123456", "resident": "Ann Lee"})
    assert out["note"] == "chart [REDACTED:MRN] reviewed; MRN: 00123456"  # default pattern replaced
    assert out["resident"] == "[REDACTED:NAME]"
    assert counts == {"mrn": 1, "name": 1}


def test_scrubbing_is_idempotent_and_cached_results_count_again():
    text = "call 555-867-5309 or jane@example.com"
    once, c1 = SCRUBBER.scrub(text)
    again, c2 = SCRUBBER.scrub(text)
    assert once == again and c1 == c2 == {"phone": 1, "email": 1}
    assert SCRUBBER.scrub(once) == (once, {})


def test_bad_mrn_pattern_is_a_config_error_naming_it():
    with pytest.raises(ValueError, match=r"not a valid regular expression"):
        ScrubSettings(mrn_patterns=["(unclosed"])


def test_check_ids_and_registry_fact_keys_that_mention_secrets_survive():
    from .phi_corpus import KEEP_KEYS

    out, counts = SCRUBBER.scrub(KEEP_KEYS)
    assert out == KEEP_KEYS
    assert counts == {}


def test_real_windows_baseline_check_ids_and_registry_values_survive():
    catalog = pytest.importorskip("osiris_windows_baseline.catalog")
    policies = pytest.importorskip("osiris_windows_baseline.policies")
    policy = {c.id: {"title": c.title, "params": dict(c.params or {})} for c in catalog.CHECKS}
    refs = {v.ref: 1 for v in vars(policies).values() if type(v).__name__ == "RegValue"}
    assert "windows.audit.credential_validation" in policy and refs
    doc = {"checks": policy, "facts": {"values": refs}}
    out, counts = SCRUBBER.scrub(doc)
    assert out == doc
    assert "secret" not in counts


@pytest.mark.parametrize("key", ["password", "Password", "db_password", "smtp-passwd", "pwd", "secret",
                                 "client_secret", "ClientSecret", "token", "access_token", "api_key", "APIKey",
                                 "private_key", "ssh_private_key", "passphrase"])
def test_secret_named_keys_lose_their_scalar_values(key):
    out, counts = SCRUBBER.scrub({key: "s3cr3t-value", "n": {key: 12345}})
    assert out == {key: "[REDACTED:SECRET]", "n": {key: "[REDACTED:SECRET]"}}
    assert counts == {"secret": 2}


@pytest.mark.parametrize("key", ["AdminPassword", "adminPassword", "DBPassword", "unicodePwd", "smtpApiKey",
                                 "SmtpPassphrase", "OAuthRefreshToken", "AzureClientSecret", "SshPrivateKey",
                                 "AdminPassword2"])
def test_camelcase_secret_names_lose_their_values_but_keep_switches(key):
    doc = {key: "s3cr3t-value", "n": {key: 12345678}, "switches": [{key: 0}, {key: "1"}, {key: "True"},
                                                                     {key: True}, {key: "disabled"}]}
    out, counts = SCRUBBER.scrub(doc)
    assert out == {key: "[REDACTED:SECRET]", "n": {key: "[REDACTED:SECRET]"}, "switches": doc["switches"]}
    assert counts == {"secret": 2}


@pytest.mark.parametrize("key", ["password_2", "db-password-01"])
def test_a_trailing_number_does_not_hide_a_secret_name(key):
    assert SCRUBBER.scrub({key: 7}) == ({key: "[REDACTED:SECRET]"}, {"secret": 1})


@pytest.mark.parametrize("key", ["PasswordLength", "pwdLastSet", "VerifyKey", "TokenLifetime", "SigningKeyId",
                                 "LocalAccountTokenFilterPolicy", "UseLogonCredential", "PasswordComplexity",
                                 "hasPassword", "CannotChangePassword", "RequireLogonToChangePassword",
                                 "nextPageToken", "PublicKeyToken"])
def test_camelcase_names_that_do_not_end_in_a_secret_keep_their_text(key):
    assert SCRUBBER.scrub({key: "kept"}) == ({key: "kept"}, {})


def test_a_secret_named_key_never_replaces_a_whole_object():
    out, counts = SCRUBBER.scrub({"token": {"issuer": "dc01", "password": "hunter2"}, "secret": ["a", 1]})
    assert out == {"token": {"issuer": "dc01", "password": "[REDACTED:SECRET]"}, "secret": ["a", 1]}
    assert counts == {"secret": 1}


def _json_values():
    from hypothesis import strategies as st

    keys = st.sampled_from(["name", "password", "AdminPassword", "phone", "dob", "mrn", "email", "ssn", "note",
                            "enabled", "Patient", "value", "x\u00e9", "a\ud800"]) | st.text(max_size=12)
    scalars = (st.none() | st.booleans() | st.integers(min_value=-2 ** 60, max_value=2 ** 60)
               | st.floats(allow_nan=True, allow_infinity=True)
               | st.sampled_from(["123-45-6789", "DOB 03/12/1985", "jane@example.org", "(212) 555-0199",
                                  "Patient: John Smith", "KB5034441", "10.0.0.1", "on", "0", "", "caf\u00e9",
                                  "bad\udc80"]) | st.text(max_size=20))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5)
                        | st.tuples(inner, inner), max_leaves=25)


def test_scrub_json_is_scrub_of_to_json_in_one_walk():
    """Bundles scrub their payload with scrub_json: it must give exactly
    what scrub(to_json(...)) gives, counts included, for any value."""
    from datetime import datetime, timezone
    from enum import Enum

    from hypothesis import given, settings

    from osiris.evidence.canonical import to_json

    class Colour(Enum):
        RED = "red"

    @settings(max_examples=300, deadline=None)
    @given(_json_values())
    def check(value):
        assert Scrubber().scrub_json(value) == Scrubber().scrub(to_json(value))

    check()
    odd = {"at": datetime(2024, 5, 1, tzinfo=timezone.utc), Colour.RED: {1, 2}, 3: b"\x00", "password": 1.0,
           "secret": Colour.RED, "phone": [2125550199], "nested": ({"ssn": "123456789"},), "big": 2 ** 60}
    assert SCRUBBER.scrub_json(odd) == SCRUBBER.scrub(to_json(odd))
    assert SCRUBBER.scrub_json(odd)[1]  # something was found and counted
