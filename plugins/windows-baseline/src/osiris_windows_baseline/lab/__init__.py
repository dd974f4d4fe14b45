"""Lab emulations of the windows-baseline fragments: test equipment.

osiris-lab imports this module through the ``osiris_lab.emulations``
entry point; it declares the settings the baseline reads and changes
(:mod:`.model`) and registers an emulation of every check and runbook
fragment (:mod:`.emulations`). The plugin's runtime code never imports it.
"""

from . import model  # noqa: F401  (declares the settings)
from . import emulations  # noqa: F401  (registers the emulations)
