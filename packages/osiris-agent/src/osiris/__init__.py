"""Osiris: the compliance appliance agent.

Plugins import :data:`hookimpl` from here and the records they return from
:mod:`osiris.records`.
"""

from importlib.metadata import PackageNotFoundError, version

from .hookspecs import API_VERSION, hookimpl
from .records import (
    CheckSource,
    CheckSpec,
    Observation,
    Risk,
    RuleSpec,
    RunbookResult,
    RunbookSpec,
    SettingsSection,
    Severity,
    Status,
    Target,
    Verdict,
)

try:
    __version__ = version("osiris-agent")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "API_VERSION",
    "CheckSource",
    "CheckSpec",
    "Observation",
    "Risk",
    "RuleSpec",
    "RunbookResult",
    "RunbookSpec",
    "SettingsSection",
    "Severity",
    "Status",
    "Target",
    "Verdict",
    "hookimpl",
    "__version__",
]
