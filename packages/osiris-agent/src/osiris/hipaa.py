"""The HIPAA Security Rule's standards and implementation specifications
(45 CFR 164.308-316) by paragraph: the names the status page and the
report put beside a citation, so a practice owner reads "Automatic
logoff", not "164.312(a)(2)(iii)". (R) required, (A) addressable.
"""

from __future__ import annotations

import re

TITLES: dict[str, str] = {
    "164.308(a)(1)": "Security management process",
    "164.308(a)(1)(ii)(A)": "Risk analysis (R)",
    "164.308(a)(1)(ii)(B)": "Risk management (R)",
    "164.308(a)(1)(ii)(C)": "Sanction policy (R)",
    "164.308(a)(1)(ii)(D)": "Information system activity review (R)",
    "164.308(a)(2)": "Assigned security responsibility",
    "164.308(a)(3)": "Workforce security",
    "164.308(a)(3)(ii)(A)": "Authorization and/or supervision (A)",
    "164.308(a)(3)(ii)(B)": "Workforce clearance procedure (A)",
    "164.308(a)(3)(ii)(C)": "Termination procedures (A)",
    "164.308(a)(4)": "Information access management",
    "164.308(a)(4)(ii)(A)": "Isolating health care clearinghouse functions (R)",
    "164.308(a)(4)(ii)(B)": "Access authorization (A)",
    "164.308(a)(4)(ii)(C)": "Access establishment and modification (A)",
    "164.308(a)(5)": "Security awareness and training",
    "164.308(a)(5)(ii)(A)": "Security reminders (A)",
    "164.308(a)(5)(ii)(B)": "Protection from malicious software (A)",
    "164.308(a)(5)(ii)(C)": "Log-in monitoring (A)",
    "164.308(a)(5)(ii)(D)": "Password management (A)",
    "164.308(a)(6)": "Security incident procedures",
    "164.308(a)(6)(ii)": "Response and reporting (R)",
    "164.308(a)(7)": "Contingency plan",
    "164.308(a)(7)(ii)(A)": "Data backup plan (R)",
    "164.308(a)(7)(ii)(B)": "Disaster recovery plan (R)",
    "164.308(a)(7)(ii)(C)": "Emergency mode operation plan (R)",
    "164.308(a)(7)(ii)(D)": "Testing and revision procedures (A)",
    "164.308(a)(7)(ii)(E)": "Applications and data criticality analysis (A)",
    "164.308(a)(8)": "Evaluation",
    "164.310(a)(1)": "Facility access controls",
    "164.310(b)": "Workstation use",
    "164.310(c)": "Workstation security",
    "164.310(d)(1)": "Device and media controls",
    "164.310(d)(2)(i)": "Disposal (R)",
    "164.310(d)(2)(ii)": "Media re-use (R)",
    "164.310(d)(2)(iii)": "Accountability (A)",
    "164.310(d)(2)(iv)": "Data backup and storage (A)",
    "164.312(a)(1)": "Access control",
    "164.312(a)(2)(i)": "Unique user identification (R)",
    "164.312(a)(2)(ii)": "Emergency access procedure (R)",
    "164.312(a)(2)(iii)": "Automatic logoff (A)",
    "164.312(a)(2)(iv)": "Encryption and decryption (A)",
    "164.312(b)": "Audit controls",
    "164.312(c)(1)": "Integrity",
    "164.312(c)(2)": "Mechanism to authenticate electronic PHI (A)",
    "164.312(d)": "Person or entity authentication",
    "164.312(e)(1)": "Transmission security",
    "164.312(e)(2)(i)": "Integrity controls (A)",
    "164.312(e)(2)(ii)": "Encryption (A)",
    "164.316(a)": "Policies and procedures",
    "164.316(b)(1)": "Documentation",
    "164.316(b)(2)(i)": "Time limit (R)",
    "164.316(b)(2)(ii)": "Availability (R)",
    "164.316(b)(2)(iii)": "Updates (R)",
}

_PART = re.compile(r"\(([^)]*)\)")


def title(citation: str) -> str:
    """The paragraph's name, or the nearest enclosing one's."""
    cite = citation
    while cite:
        if cite in TITLES:
            return TITLES[cite]
        if "(" not in cite:
            break
        cite = cite[: cite.rfind("(")]
    return ""


def sort_key(citation: str) -> tuple:
    """164.308(a)(1)(ii)(B) before 164.308(a)(3): paragraph by paragraph,
    roman numerals and numbers compared as such."""
    section, _, rest = citation.partition("(")
    parts: list[tuple[int, int, str]] = []
    for p in _PART.findall("(" + rest):
        if p.isdigit():
            parts.append((1, int(p), ""))
        elif re.fullmatch(r"[ivxl]+", p) and p not in ("l",):
            parts.append((2, _roman(p), ""))
        else:
            parts.append((0, 0, p))
    return (section, tuple(parts))


def _roman(text: str) -> int:
    values = {"i": 1, "v": 5, "x": 10, "l": 50}
    total = 0
    for a, b in zip(text, text[1:] + " "):
        v = values[a]
        total += -v if b != " " and values.get(b, 0) > v else v
    return total
