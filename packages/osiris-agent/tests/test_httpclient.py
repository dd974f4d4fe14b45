import datetime as dt

import pytest

from osiris.httpclient import origin, require_https, retry_after

NOW = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.timezone.utc).timestamp()


@pytest.mark.parametrize("value,expected", [
    ("120", 120.0), (" 7 ", 7.0), ("0", 0.0),
    ("Wed, 25 Nov 2026 12:00:30 GMT", 30.0),          # IMF-fixdate
    ("Wednesday, 25-Nov-26 12:01:00 GMT", 60.0),      # obsolete RFC 850 form
    ("Wed Nov 25 12:00:05 2026", 5.0),                # asctime: no zone, GMT by definition
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),           # in the past: no wait, never negative
    (None, None), ("", None), ("soon", None), ("-5", None), ("1.5", None), ("inf", None), ("nan", None),
    ("\u0661\u0662", None),                           # Arabic-Indic digits are not DIGIT
    ("9" * 400, None),                                # overflows to infinity
])
def test_retry_after_reads_both_forms_and_refuses_the_rest(value, expected):
    assert retry_after(value, now=NOW) == expected


@pytest.mark.parametrize("url", ["https://central.example/api", "https://10.0.0.5:8443/x?y=1"])
def test_https_urls_are_accepted(url):
    assert require_https(url, allow_http=False, flag="allow_http") == url


def test_plain_http_needs_the_lab_flag_and_the_message_names_it_not_the_url():
    url = "http://hooks.example/T0KEN-in-path"
    with pytest.raises(ValueError) as e:
        require_https(url, allow_http=False, flag="allow_http_for_lab")
    assert "allow_http_for_lab: true" in str(e.value) and "T0KEN" not in str(e.value)
    assert require_https(url, allow_http=True, flag="allow_http_for_lab") == url


@pytest.mark.parametrize("url", ["ftp://host/x", "https:///path-only", "central.example/api", "file:///etc/passwd",
                                 "https://host:abc/x", "https://host:99999/x"])
def test_other_schemes_and_relative_urls_are_refused(url):
    with pytest.raises(ValueError, match="an absolute https:// URL"):
        require_https(url, allow_http=True, flag="allow_http")


@pytest.mark.parametrize("url,shown", [
    ("https://hooks.example/T0KEN/x?sig=S3CR3T", "https://hooks.example"),
    ("https://user:pa55word@central.example:8443/api", "https://central.example:8443"),
    ("http://127.0.0.1:9/h", "http://127.0.0.1:9"),
])
def test_origin_shows_scheme_host_and_port_only(url, shown):
    assert origin(url) == shown
