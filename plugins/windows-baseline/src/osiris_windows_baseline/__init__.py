"""osiris-windows-baseline: the Windows HIPAA baseline for Osiris.

Checks mapped to 45 CFR 164.308/310/312 (and CIS benchmark sections),
runbooks for what can be healed safely, and default L1 healing rules for
the low-risk ones; all run by the ``windows`` plugin's executor. The
module :mod:`osiris_windows_baseline.lab` emulates the fragments for
osiris-lab and is never imported by the plugin itself.
"""

__version__ = "0.1.0"
