"""PHI scrubbing: what leaves the appliance as evidence carries no patient data.

Every bundle's ``payload`` and ``policy`` pass through :class:`Scrubber`
before they are canonicalised and signed. What is found is replaced by a
typed placeholder such as ``[REDACTED:SSN]`` and counted per type in the
bundle's ``scrubbed`` member, so an auditor sees that (and what kind of)
data was removed without seeing it.

Detected:

* US Social Security numbers: ``123-45-6789`` / ``123 45 6789`` anywhere
  (SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000);
  nine bare digits only after an SSN label;
* phone numbers: North American numbers written with separators or
  parentheses (``(212) 555-0199``, ``212.555.0147``, ``+1 415 555 2671``,
  extensions included), international numbers with a leading ``+``, and any
  digit run after a phone label (``phone:``, ``tel``, ``mobile``, ``fax``);
* e-mail addresses;
* dates of birth: a date after a DOB label (``DOB``, ``date of birth``,
  ``born on``, ``birth date``), in numeric, month-name or compact
  (``YYYYMMDD``, ``MMDDYYYY``) form;
* medical record numbers: the configurable ``evidence.scrub.mrn_patterns``
  (``MRN``, ``MR#``, ``MR No.``, ``medical record no.``);
* patient names: the whole value of keys known to hold them
  (``evidence.scrub.name_fields``), capitalised words after a
  ``Patient:`` / ``Patient name:`` label, and in file names the name words
  glued with ``_``/``-`` to a redacted DOB, MRN or SSN;

Labels count where file servers and web apps put them: glued to other
words with ``_`` (``scan_DOB_19850312.pdf``), with the value after ``/``
or ``_`` (``.../mrn/00123456/chart``); a letter or digit touching a label
makes it part of another word (``mrnet.dll``, ``telemetry``).
* secrets: the scalar value of a key named like a secret (the whole key, or
  its last ``_``/``-`` word, is exactly ``password``, ``pwd``, ``secret``,
  ``token``, ``api_key``, ``private_key``, ``client_secret``...: see
  :data:`SECRET_KEYS`), typed ``SECRET``, because secrets never belong in
  evidence either. CamelCase keys are split into words too (``AdminPassword``,
  ``unicodePwd``, ``smtpApiKey``), and a trailing number is not a word
  (``AdminPassword2``, ``password_2``). Under camelCase names a switch is
  kept: a digit, or ``true``/``false``/``yes``/``no``/``on``/``off``/
  ``enabled``/``disabled``, because Windows names policy switches that way
  (``ClearTextPassword = 0``, ``CannotChangePassword = True``) and auditors
  need them; no credential is one digit or one of those words. A camelCase
  name that starts with ``has``, ``is``, ``can``, ``cannot``, ``require``,
  ``next`` or ``public`` describes a secret rather than holding one.
  Check ids and registry paths (keys with ``.`` or ``\\``) are never taken
  for secrets' names, and a whole object is never replaced.

Dict keys are scrubbed like values (a facts table keyed by e-mail address
would otherwise leak it).

Why our own detectors (docs/evidence.md has the measurements): the offline
candidates were scored on the corpus in ``tests/evidence/phi_corpus.py``.
scrubadub 2.0.1 (the last release, 2023) with its date-of-birth detector
missed bare SSNs, 555-numbers and every MRN, pulls scikit-learn, SciPy, NLTK
and TextBlob (~290 MB) into the appliance image and takes ~0.5 ms per
string. ``phonenumbers`` alone, in its strict mode, misses fictional
numbers; in its lenient mode it removes KB numbers, IP addresses and event
counts that evidence must keep, at ~0.2 ms per string. Presidio needs spaCy
models from a network hub. The detectors below are regular expressions
written against that corpus, with look-arounds that keep versions, KB
numbers, GUIDs, IPs, SIDs and hashes intact; a bundle is scrubbed in
microseconds.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .canonical import MAX_SAFE_INT, json_number, to_json, utf8_text
from .settings import DEFAULT_MRN_PATTERNS, DEFAULT_NAME_FIELDS

__all__ = ["Scrubber", "placeholder", "is_secret_name", "TYPES"]

TYPES = ("ssn", "phone", "email", "dob", "mrn", "name", "secret")


def placeholder(kind: str) -> str:
    return f"[REDACTED:{kind.upper()}]"


# Keys whose (scalar) values are secrets. A key is a secret's name when,
# lower-cased without punctuation, the whole key or its last one or two
# ``_``/``-``/space-separated words are one of these exactly: "db_password", "api_key",
# "ClientSecret" are; "windows.audit.credential_validation" (a check id),
# "...\\WDigest\\UseLogonCredential" (a registry path),
# "LocalAccountTokenFilterPolicy" and "password_length" are not. Keys
# holding "." or "\\" (check ids, registry paths, file names) are never
# classified as secrets: they name things, they do not hold credentials.
SECRET_KEYS = frozenset({
    "password", "passwd", "pwd", "passphrase", "secret", "token", "apikey", "privatekey", "clientsecret",
    "secretkey", "accesstoken", "refreshtoken", "authtoken", "bearertoken", "sessiontoken", "idtoken",
    "accesskey", "secretaccesskey", "sharedsecret", "psk", "preshared", "presharedkey", "connectionstring",
})
_KEY_NORMAL = re.compile(r"[^a-z0-9]")
_KEY_WORDS = re.compile(r"[_\s-]+")
# CamelCase words: "DBPassword" -> DB, Password; "unicodePwd" -> unicode, Pwd.
_CAMEL_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
# The kind of a camelCase secret name, under which switches are kept.
_SECRET_OR_SWITCH = "secret-or-switch"
# CamelCase names that begin with one of these describe a secret rather
# than hold one: hasPassword, CannotChangePassword, RequireLogonToChangePassword,
# nextPageToken (a paging cursor), PublicKeyToken (.NET assembly identity).
_NOT_HOLDING = frozenset({"has", "is", "can", "cannot", "require", "requires", "next", "public"})
_SWITCH = re.compile(r"(?i:[0-9]|true|false|yes|no|on|off|enabled|disabled)")

# Characters that may not touch a match on either side: they would make it
# part of a longer token (a version, an IP, a GUID, a SID, a KB number).
# Underscores count as separators (file names such as scan_123-45-6789.pdf).
_L = r"(?<![0-9A-Za-z.:/+@-])"
_R = r"(?![0-9A-Za-z:/@]|[.-]\d)"

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![\w-])")

# A label's edges: a letter or digit may not touch it on the left, a letter
# not on the right; "_" may touch both, because scan and export file names
# glue words with it ("scan_DOB_19850312.pdf", "SSN123456789"). Between a
# label and its value: blanks, ":", "#", "=", and "/" or "_" (URL paths and
# file names: ".../mrn/00123456/chart", "MRN_00123456.pdf").
_LB = r"(?<![A-Za-z0-9])"
_LE = r"(?![A-Za-z])"
_SEP = r"(?:\s|[:#=/_]){0,4}"
_SSN_LABEL = _LB + r"(?i:ssn|ss\#|soc(?:ial)?[ _-]?sec(?:urity)?(?:[ _-]?(?:number|num|no\.?|\#))?)" + _LE
_SSN_LABELLED = re.compile(_SSN_LABEL + _SEP + r"-?(\d{3}[- ]?\d{2}[- ]?\d{4})(?!\d)")
_SSN = re.compile(_L + r"(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}" + _R)

_PHONE_WORD = _LB + r"(?i:phone|tel(?:ephone)?|mobile|cell(?:phone)?|fax|contact\s+number|ph)" + _LE
_PHONE_LABEL = _PHONE_WORD + r"(?i:\.?(?:\s*(?:number|num|no\.?|\#|from|to))?)"
_PHONE_LABELLED = re.compile(_PHONE_LABEL + r"\s*[:#=]?\s*(\+?\d[\d\s().-]{5,18}\d)(?!\d)")
# After "/" or "_" only a whole number is taken (ten or eleven digits): a
# fax's file name carries its date too ("fax_20240312.pdf").
_PHONE_GLUED = re.compile(_PHONE_WORD + r"[/_]((?:\+?1)?\d{10})(?!\d)")
_EXT = r"(?:\s*(?:x|ext\.?|extension)\s*\d{1,6})?"
_PHONE_NANP = re.compile(
    _L + r"(?:\+?1[-. ]?)?(?:\(\d{3}\)[-. ]?\d{3}[-. ]\d{4}|(\d{3})([-. ])\d{3}\2\d{4})" + _EXT + _R
)
_PHONE_INTL = re.compile(_L + r"\+\d{1,3}(?:[ -]\(?\d{1,5}\)?){2,5}" + _EXT + _R)

_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE = (
    r"(?:\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})"
    r"|\d{4}[/.-]\d{1,2}[/.-]\d{1,2}"
    rf"|(?i:{_MONTH})\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?i:{_MONTH}),?\s+\d{{4}})"
)
# Compact dates (YYYYMMDD, MMDDYYYY), only ever after a birth-date label:
# anywhere else they are build stamps and log file dates evidence keeps.
_COMPACT_DATE = (r"(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
                 r"|(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?:19|20)\d\d")
_DOB_LABEL = _LB + r"(?i:d\.?o\.?b\.?|date[\s_-]+of[\s_-]+birth|birth[\s_-]*date|birthday|born(?:[\s_]+on)?)" + _LE
_DOB = re.compile(_DOB_LABEL + r"(?:\s|[:#=/_-]){0,4}(" + _DATE + "|" + _COMPACT_DATE + r")(?!\d)")

_PATIENT_NAME = re.compile(
    r"(?i:\bpatient(?:'s)?(?:\s+(?:full\s+)?name)?)\s*[:=]\s*"
    # Capitalised words with at least one lower-case letter: "DOB" or "MRN"
    # after a name are labels, not names.
    r"([A-Z][A-Za-z'\u2019-]*[a-z][A-Za-z'\u2019-]*(?:,?\s+[A-Z][A-Za-z'\u2019-]*[a-z][A-Za-z'\u2019-]*|\s+[A-Z]\.(?=\s)){0,3})"
)

# A patient's name glued ("_", "-") to a redacted DOB, MRN or SSN, with or
# without the label between, as in scan file names: "Smith_John_DOB_...",
# "MRN00123456_DOE_JANE.pdf". A name word is capitalised (with a lower-case
# letter) or all capitals; words scanned documents are named with, and the
# labels themselves, are not names.
_FILE_WORDS = (
    "scan|scanned|intake|form|forms|chart|charts|report|reports|result|results|lab|labs|consent|referral|"
    "patient|patients|pt|final|copy|signed|page|pages|doc|docs|document|img|image|images|fax|faxed|note|notes|"
    "record|records|visit|new|old|draft|letter|invoice|claim|claims|billing|insurance|ins|card|id|xray|mri|ct|"
    "ecg|ekg|pdf|jpg|jpeg|tif|tiff|png|front|back|dob|mrn|mr|ssn|med|rec|birth|date|of|born|on|no|num|number|"
    "and|the|for|to|from|by|rx|dr|md|do|np|pa|rn|er|ed|icu|or|op|in|out|hist|history|hp|dc|summary|upload|export"
)
_NAME_WORD = (rf"(?!(?i:{_FILE_WORDS})(?![A-Za-z]))"
              r"(?:[A-Z][A-Za-z'\u2019]*[a-z][A-Za-z'\u2019]*|[A-Z][A-Z'\u2019]+)")
_NAMES = rf"{_NAME_WORD}(?:[_-]{_NAME_WORD}){{0,3}}"
_REDACTED_ID = r"\[REDACTED:(?:DOB|MRN|SSN)\]"
_NAME_BEFORE_ID = re.compile(rf"(?<![A-Za-z0-9'\u2019])({_NAMES})(?=[_-](?:[A-Za-z#.]{{2,24}}(?:\s|[:#=/_-]){{0,4}})?"
                             rf"{_REDACTED_ID})")
_NAME_AFTER_ID = re.compile(rf"(?<={_REDACTED_ID})[_-]({_NAMES})(?![A-Za-z0-9'\u2019])")

# A string without any of these cannot hold anything the detectors find.
_MAYBE = re.compile(r"[\d@]|(?i:patient)")
_maybe = _MAYBE.search

_CACHE_MAX = 8192
_CACHE_LEN = 256

Detector = tuple[str, "re.Pattern[str]", int, "tuple[str, ...] | None"]


def _normal_key(key: str) -> str:
    return _KEY_NORMAL.sub("", key.lower())


def _ends_in_secret(words: list[str]) -> bool:
    # The last word, or the last two ("ssh_private_key", "db_api_key"),
    # after any trailing numbers ("password_2", "AdminPassword2").
    while words and words[-1].isdigit():
        words = words[:-1]
    return bool(words) and (words[-1] in SECRET_KEYS or "".join(words[-2:]) in SECRET_KEYS)


def _is_switch(value: Any) -> bool:
    if type(value) is int or type(value) is float:
        return 0 <= value <= 9 and value == int(value)
    return isinstance(value, str) and _SWITCH.fullmatch(value.strip()) is not None


def _secret_kind(key: str, normal: str) -> str | None:
    """``"secret"``, :data:`_SECRET_OR_SWITCH` (a camelCase name) or None."""
    if "." in key or "\\" in key:
        return None
    if normal in SECRET_KEYS or _ends_in_secret(
            [_normal_key(w) for w in _KEY_WORDS.split(key.strip().lower()) if w]):
        return "secret"
    camel = [w.lower() for w in _CAMEL_WORDS.findall(key)]
    if camel and camel[0] not in _NOT_HOLDING and _ends_in_secret(camel):
        return _SECRET_OR_SWITCH
    return None


def is_secret_name(key: str) -> bool:
    """Whether ``key`` names a secret (see :data:`SECRET_KEYS`), camelCase
    names included. The config's error messages use this to decide what
    they must never repeat, so evidence and errors agree on what a secret's
    name looks like."""
    return _secret_kind(key, _normal_key(key)) is not None


class Scrubber:
    """Replace PHI (and secrets) in plain JSON values with typed placeholders."""

    def __init__(self, mrn_patterns: Iterable[str] = DEFAULT_MRN_PATTERNS,
                 name_fields: Iterable[str] = DEFAULT_NAME_FIELDS):
        default_mrn = list(mrn_patterns) == list(DEFAULT_MRN_PATTERNS)
        mrn = [re.compile(p) for p in mrn_patterns]
        # (type, pattern, group replaced: 1 keeps the label, 0 replaces the
        # whole match, a cheap hint that must be in the lower-cased text for
        # the pattern to have a chance, or None). Order matters: labelled
        # forms first (they own their digits), then the free-standing shapes.
        self.detectors: list[Detector] = [
            ("email", _EMAIL, 0, ("@",)),
            *[("mrn", p, 1 if p.groups else 0, ("mr", "med") if default_mrn else None) for p in mrn],
            ("ssn", _SSN_LABELLED, 1, ("ss", "soc")),
            ("dob", _DOB, 1, ("dob", "d.o", "do.", "birth", "born")),
            ("phone", _PHONE_LABELLED, 1, ("ph", "tel", "mobile", "cell", "fax", "contact")),
            ("phone", _PHONE_GLUED, 1, ("ph", "tel", "mobile", "cell", "fax")),
            ("ssn", _SSN, 0, None),
            ("phone", _PHONE_INTL, 0, ("+",)),
            ("phone", _PHONE_NANP, 0, None),
            ("name", _PATIENT_NAME, 1, ("patient",)),
            # Last: they look for what the detectors above left behind.
            ("name", _NAME_BEFORE_ID, 1, ("[redacted:",)),
            ("name", _NAME_AFTER_ID, 1, ("[redacted:",)),
        ]
        # Facts repeat (KB numbers, versions, reasons): remember short strings.
        self._cache: dict[str, tuple[str, tuple[tuple[str, int], ...]]] = {}
        self._kinds: dict[str, str | None] = {}
        self._plain_keys: set[str] = set()
        self.name_fields = {_normal_key(f) for f in name_fields}
        self.phone_fields = {"phone", "phonenumber", "telephone", "mobile", "cell", "cellphone", "fax", "homephone", "workphone"}
        self.dob_fields = {"dob", "dateofbirth", "birthdate", "birthday"}
        self.ssn_fields = {"ssn", "socialsecuritynumber"}
        self.email_fields = {"email", "emailaddress", "mail"}
        self.mrn_fields = {"mrn", "medicalrecordnumber"}

    @classmethod
    def from_settings(cls, settings: Any) -> Scrubber:
        return cls(settings.mrn_patterns, settings.name_fields)

    # -- strings -----------------------------------------------------------------

    def scrub_text(self, text: str, counts: Counter | None = None) -> str:
        """Scrub one string, adding what was found to ``counts``."""
        if not _MAYBE.search(text):
            return text
        hit = self._cache.get(text)
        if hit is None:
            found: Counter = Counter()
            out = text
            low = text.lower()
            for kind, pattern, group, hints in self.detectors:
                if hints is not None and not any(h in low for h in hints):
                    continue
                if pattern.search(out):
                    out = pattern.sub(self._replacer(kind, group, found), out)
                    low = out.lower()  # later hints look at what is left
            hit = (out, tuple(found.items()))
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            if len(text) <= _CACHE_LEN:
                self._cache[text] = hit
        if counts is not None:
            for kind, n in hit[1]:
                counts[kind] += n
        return hit[0]

    @staticmethod
    def _replacer(kind: str, group: int, counts: Counter) -> Callable[[re.Match[str]], str]:
        token = placeholder(kind)

        def repl(m: re.Match[str]) -> str:
            whole = m.group(0)
            if group == 0 or m.group(group) is None:
                counts[kind] += 1
                return token
            if m.group(group).startswith("[REDACTED:"):
                return whole
            counts[kind] += 1
            start, end = m.start(group) - m.start(0), m.end(group) - m.start(0)
            return whole[:start] + token + whole[end:]

        return repl

    # -- structures ----------------------------------------------------------------

    def _field_kind(self, key: str) -> str | None:
        try:
            return self._kinds[key]
        except KeyError:
            pass
        kind = self._kinds[key] = self._classify_key(key)
        if len(self._kinds) > _CACHE_MAX:
            self._kinds.clear()
        return kind

    def _classify_key(self, key: str) -> str | None:
        k = _normal_key(key)
        secret = _secret_kind(key, k)
        if secret:
            return secret
        for kind, fields in (("name", self.name_fields), ("phone", self.phone_fields), ("dob", self.dob_fields),
                             ("ssn", self.ssn_fields), ("email", self.email_fields), ("mrn", self.mrn_fields)):
            if k in fields:
                return kind
        return None

    def scrub(self, value: Any) -> tuple[Any, dict[str, int]]:
        """Scrub a plain JSON value; returns the new value and counts per type."""
        counts: Counter = Counter()
        out = self._walk(value, counts)
        return out, {k: counts[k] for k in TYPES if counts[k]}

    def scrub_json(self, value: Any) -> tuple[Any, dict[str, int]]:
        """``scrub(to_json(value))`` in one walk instead of two (what a
        bundle's payload takes): the same result, for any value."""
        counts: Counter = Counter()
        out = self._walk_json(value, counts)
        return out, {k: counts[k] for k in TYPES if counts[k]}

    def _walk_json(self, value: Any, counts: Counter) -> Any:
        # Plain JSON types as to_json would make them, then as _walk would
        # scrub them; anything else through to_json first, then _walk.
        t = type(value)
        if t is str:
            if not value.isascii():
                value = utf8_text(value)
            return self.scrub_text(value, counts) if _maybe(value) else value
        if t is bool or value is None:
            return value
        if t is int:
            return value if -MAX_SAFE_INT <= value <= MAX_SAFE_INT else self._walk(str(value), counts)
        if t is float:
            return self._walk(json_number(value), counts)
        if t is list:
            return [self._walk_json(v, counts) for v in value]
        if t is dict:
            for key in value:
                if type(key) is not str or not key.isascii():  # to_json converts such keys first
                    return self._walk(to_json(value), counts)
            out: dict[str, Any] = {}
            kinds = self._kinds
            plain = self._plain_keys
            for key, v in value.items():
                if key in plain:
                    new_key = key
                elif _maybe(key):
                    new_key = self.scrub_text(key, counts)
                else:
                    new_key = key
                    if len(key) <= _CACHE_LEN:
                        if len(plain) >= _CACHE_MAX:
                            plain.clear()
                        plain.add(key)
                if new_key in out:
                    n = 2
                    while f"{new_key}#{n}" in out:
                        n += 1
                    new_key = f"{new_key}#{n}"
                kind = kinds[key] if key in kinds else self._field_kind(key)
                if kind is not None:
                    v = to_json(v)
                    if v not in (None, "") and type(v) is not bool and isinstance(v, (str, int, float)) and not (
                            kind == _SECRET_OR_SWITCH and _is_switch(v)):
                        kind = "secret" if kind == _SECRET_OR_SWITCH else kind
                        counts[kind] += 1
                        out[new_key] = placeholder(kind)
                        continue
                    out[new_key] = self._walk(v, counts)
                else:
                    out[new_key] = self._walk_json(v, counts)
            return out
        return self._walk(to_json(value), counts)

    def _walk(self, value: Any, counts: Counter) -> Any:
        t = type(value)
        if t is str:
            return self.scrub_text(value, counts) if _maybe(value) else value
        if t is bool or t is int or t is float or value is None:
            return value  # most leaves of facts: not worth an ABC check
        if t is list:
            return [self._walk(v, counts) for v in value]
        if t is dict or isinstance(value, Mapping):
            out: dict[str, Any] = {}
            kinds = self._kinds
            plain = self._plain_keys
            for key, v in value.items():
                if key in plain:  # a key seen before with nothing to scrub (keys repeat in every bundle)
                    new_key = key
                elif _maybe(key):
                    new_key = self.scrub_text(key, counts)
                else:
                    new_key = key
                    if type(key) is str and len(key) <= _CACHE_LEN:
                        if len(plain) >= _CACHE_MAX:
                            plain.clear()
                        plain.add(key)
                if new_key in out:  # two keys scrubbed to the same placeholder
                    n = 2
                    while f"{new_key}#{n}" in out:
                        n += 1
                    new_key = f"{new_key}#{n}"
                kind = kinds[key] if key in kinds else self._field_kind(key)
                # Only scalars are replaced: a dict or list under such a key
                # is walked like any other (its own keys decide).
                if kind is not None and v not in (None, "") and type(v) is not bool:
                    if isinstance(v, (str, int, float)) and not (kind == _SECRET_OR_SWITCH and _is_switch(v)):
                        kind = "secret" if kind == _SECRET_OR_SWITCH else kind
                        counts[kind] += 1
                        out[new_key] = placeholder(kind)
                        continue
                out[new_key] = self._walk(v, counts)
            return out
        if isinstance(value, str):
            return self.scrub_text(value, counts)
        if isinstance(value, list):
            return [self._walk(v, counts) for v in value]
        return value
