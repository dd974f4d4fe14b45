"""One scrubbing boundary for everything that leaves the evidence path.

The evidence log scrubs PHI and secrets before it signs; the same scrubber
(the site's ``evidence.scrub`` settings) is applied to what leaves by the
other doors: what escalation channels and L2 planners are told (the
ladder's incident view), ``/status``, the CLI's tables and every log line
the agent writes. Our own code because the scrubber is (see
:mod:`osiris.evidence.scrub`); this module only puts it at the doors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .evidence.scrub import Scrubber
from .evidence.settings import ScrubSettings


def scrubber_for(settings: ScrubSettings) -> Callable[[Any], Any]:
    """``scrub(value) -> value`` with PHI and secret-named values replaced."""
    scrubber = Scrubber.from_settings(settings)
    return lambda value: scrubber.scrub(value)[0]


class ScrubbingFilter(logging.Filter):
    """A handler filter that scrubs each record's final message (and its
    exception text) before any handler writes it."""

    def __init__(self, scrub: Callable[[Any], Any]):
        super().__init__()
        self.scrub = scrub

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's to report
            return True
        record.msg, record.args = self.scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True


def scrub_logs(scrub: Callable[[Any], Any], logger: logging.Logger | None = None) -> ScrubbingFilter:
    """Install the filter on every handler of ``logger`` (default: root)."""
    filt = ScrubbingFilter(scrub)
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, ScrubbingFilter) for f in handler.filters):
            handler.addFilter(filt)
    return filt
