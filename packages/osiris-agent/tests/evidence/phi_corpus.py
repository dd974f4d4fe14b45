"""The PHI corpus that decided the scrubbing approach (docs/evidence.md).

``PHI``: strings as they turn up in facts from Windows hosts (event log
messages, file names, share listings, ticket text), each with the fragments
that must not survive and the placeholder types expected. All values are
fictional: SSNs from the ranges the SSA never issues for people were avoided
on purpose only where the detector rules allow (the detector must catch
realistic ones), phone numbers are 555 numbers, e-mail domains are
example.* (RFC 2606).

``KEEP``: look-alikes that evidence needs and that must come through
byte-for-byte: versions, KB numbers, GUIDs, IPv4/IPv6 addresses and ports,
SIDs, hashes, serials, MAC addresses, timestamps, counters.
"""

PHI = [
    ("Patient SSN 123-45-6789 on file", ["123-45-6789"], {"ssn"}),
    ("ssn:078051120", ["078051120"], {"ssn"}),
    ("Social Security No. 219 09 9999 (spouse)", ["219 09 9999"], {"ssn"}),
    ("scan_123-45-6789_intake.pdf", ["123-45-6789"], {"ssn"}),
    ("call 555-867-5309 re: results", ["555-867-5309"], {"phone"}),
    ("Phone (212) 555-0199 ext 12", ["(212) 555-0199", "555-0199"], {"phone"}),
    ("+1 415 555 2671", ["415 555 2671"], {"phone"}),
    ("Mobile: 212.555.0147", ["212.555.0147"], {"phone"}),
    ("tel 2125550147", ["2125550147"], {"phone"}),
    ("fax: 555 0100", ["555 0100"], {"phone"}),
    ("UK office +44 20 7946 0958", ["7946 0958", "+44 20"], {"phone"}),
    ("contact jane.doe@example.com about refill", ["jane.doe@example.com"], {"email"}),
    ("From: <j.smith+portal@mail.example.org>", ["j.smith+portal@mail.example.org"], {"email"}),
    ("DOB: 04/12/1985", ["04/12/1985"], {"dob"}),
    ("date of birth 1985-04-12", ["1985-04-12"], {"dob"}),
    ("born on March 3, 1972 in Ohio", ["March 3, 1972"], {"dob"}),
    ("Birth date: 3rd Feb 1990", ["3rd Feb 1990"], {"dob"}),
    ("dob=12.31.1960", ["12.31.1960"], {"dob"}),
    ("MRN: 00123456", ["00123456"], {"mrn"}),
    ("MRN 7788991", ["7788991"], {"mrn"}),
    ("Medical record no. A-778812 attached", ["A-778812", "778812"], {"mrn"}),
    ("mrn#55512345", ["55512345"], {"mrn"}),
    ("Patient: John Smith, room 4", ["John Smith"], {"name"}),
    ("patient name = Mary-Ann O'Neil", ["Mary-Ann O'Neil", "O'Neil"], {"name"}),
    ("C:\\Share\\Intake\\Patient: Maria Garcia.docx", ["Maria Garcia"], {"name"}),
    ("Fax from 555-0100 for Patient: Ana Li DOB 1/2/1950 MRN 99887766 ssn 123-45-6789",
     ["555-0100", "Ana Li", "1/2/1950", "99887766", "123-45-6789"], {"phone", "name", "dob", "mrn", "ssn"}),
]

KEEP = [
    "Windows 10.0.19045.3803",
    "KB5034441 installed",
    "KB 5031356",
    "hotfix KB5034441, KB5031356 and KB890830 are installed",
    "{3F2504E0-4F89-11D3-9A0C-0305E82C3301}",
    "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    "192.168.10.254",
    "10.0.0.1:5986",
    "https://dc01.clinic.example:5986/wsman",
    "fe80::1ff:fe23:4567:890a",
    "2001:db8:85a3::8a2e:370:7334",
    "Defender signature 1.403.1234.0",
    "engine 1.1.24010.10",
    "build 22631.3007",
    "port 5985",
    "BitLocker recovery id 2F1A6C9B",
    "BitLocker recovery key 123456-654321-111111-222222-333333-444444-555555-666666",
    "last boot 2024-05-01T10:22:33Z",
    "Event ID 4625 count 1234567890",
    "S-1-5-21-3623811015-3361044348-30300820-1013",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "serial 5CG1234XYZ",
    "MAC 00-1A-2B-3C-4D-5E",
    "uptime 1234567 s",
    "version 2.4.1",
    "free 123456789012 bytes (45.2%)",
    "policy MaxPasswordAge 90 days, lockout after 5 attempts",
    "CIS 18.9.47.5.1.2",
    "164.312(a)(2)(iii)",
    "patch window 2024-05-01 02:00-04:00",
    "firewall rule 'Allow 443' on profiles Domain, Private, Public",
    "scheduled task \\Microsoft\\Windows\\Defrag\\ScheduledDefrag",
    "user CLINIC\\frontdesk logged on 3 times",
    "Patient portal service is running",
    "OS build 19045.4291 (22H2)",
    "disk 0 partition 2: 476.3 GB",
    "TLS 1.2 enabled; 1.0 and 1.1 disabled",
    "1.3.6.1.4.1.311.21.8.1234567.7654321",
    "printer at 10.20.30.40 queue 3",
    "ticket 4521-330-1180",
    "log 2024.05.01 entries: 555 0100 errors",
]

# Structured look-alikes from the windows-baseline plugin: check ids (the
# keys of a sweep bundle's policy), fact keys (registry value paths, secedit
# names, parameter names) whose names merely mention passwords, tokens or
# credentials. Nothing here is a secret: each must come through unchanged.
KEEP_KEYS = {
    "checks": {
        "windows.audit.credential_validation": {
            "plugin": "windows-baseline", "title": "Audit Credential Validation", "cis": "17.1.1",
            "hipaa": ["164.308(a)(5)(ii)(C)", "164.312(b)"], "severity": "high",
            "params": {"success": True, "failure": True},
        },
        "windows.accounts.password_length": {"params": {"min_length": 14}},
        "windows.accounts.password_history": {"params": {"min_history": 24}},
        "windows.accounts.password_age": {"params": {"max_age_days": 365, "min_age_days": 1}},
        "windows.accounts.password_complexity": {"params": {}},
        "windows.accounts.blank_password_console_only": {"params": {}},
        "windows.persistence.run_keys": {"params": {}},
    },
    "facts": {
        "values": {
            "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\WDigest\\UseLogonCredential": 0,
            "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System\\LocalAccountTokenFilterPolicy": 0,
            "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Lsa\\LimitBlankPasswordUse": 1,
        },
        "UseLogonCredential": 0,
        "LocalAccountTokenFilterPolicy": 1,
        "LimitBlankPasswordUse": 1,
        "MinimumPasswordLength": 14,
        "MaximumPasswordAge": 42,
        "MinimumPasswordAge": 1,
        "PasswordHistorySize": 24,
        "PasswordComplexity": 1,
        "ClearTextPassword": 0,
        "password_length": 14,
        "token_lifetime_minutes": 60,
        "credential_validation": "Success and Failure",
        "run_keys": ["HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"],
    },
}
