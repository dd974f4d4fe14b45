"""Read the kernel clock discipline state with adjtimex(2), read-only.

Python's standard library does not expose adjtimex, and no well-kept
library wraps just this call; it is a dozen lines of ctypes. ``modes = 0``
makes it a pure read. systemd's ProtectClock= filters adjtimex altogether,
so the unit leaves it off and allows the syscall explicitly (see
modules/osiris-hardening.nix); without capabilities the call cannot change
the clock. The kernel's view is the one that matters: it is what
timestamps every bundle, whichever NTP daemon disciplines it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Any

# Return values of adjtimex (clock state), see adjtimex(2).
STATES = {0: "TIME_OK", 1: "TIME_INS", 2: "TIME_DEL", 3: "TIME_OOP", 4: "TIME_WAIT", 5: "TIME_ERROR"}
TIME_ERROR = 5
STA_UNSYNC = 0x0040


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


@functools.cache
def _libc() -> ctypes.CDLL:
    # Once: find_library runs ldconfig (or gcc, where there is none) each call.
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def read_clock_state() -> dict[str, Any]:
    """Facts about kernel clock synchronisation. Raises OSError on failure."""
    libc = _libc()
    tx = _Timex()
    tx.modes = 0
    state = libc.adjtimex(ctypes.byref(tx))
    if state < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"adjtimex: {os.strerror(err)}")
    return {
        "state": STATES.get(state, str(state)),
        "unsync_flag": bool(tx.status & STA_UNSYNC),
        "synchronized": state != TIME_ERROR and not tx.status & STA_UNSYNC,
        "maxerror_us": int(tx.maxerror),
        "esterror_us": int(tx.esterror),
        "offset": int(tx.offset),
        "status_flags": int(tx.status),
        "timesyncd_synchronized": os.path.exists("/run/systemd/timesync/synchronized"),
    }
