"""osiris-lab: a practice of emulated Windows hosts for tests, benchmarks and demos.

Test equipment, not product: the hosts speak WS-Management (WinRS) over
real HTTP and HTTPS to real clients (pywinrm, pypsrp), authenticate with
Basic or NTLM (pyspnego as the acceptor, with message encryption), keep a
state model that checks read and runbooks change, and misbehave on demand
(latency, refused and reset connections, HTTP 500, operation timeouts,
hangs). Nothing in the agent imports this package.

    from osiris_lab import Lab
    lab = Lab(3, ps_start_latency=0.3)
    with lab.running():
        ...  # lab.targets(), lab.break_setting("ws01", "firewall.public.enabled")
"""

from .emulation import HostView, PSError, command_not_found
from .server import FAULT_ACTIONS, FAULT_KINDS, Fault, HostSpec, Lab, LabHost, Quotas, practice
from .state import ROLES, HostState, declare

__all__ = [
    "FAULT_ACTIONS",
    "FAULT_KINDS",
    "Fault",
    "HostSpec",
    "HostState",
    "HostView",
    "Lab",
    "LabHost",
    "PSError",
    "Quotas",
    "ROLES",
    "command_not_found",
    "declare",
    "practice",
]
