"""osiris-windows: reach Windows hosts over WinRM, one batched PowerShell
script per host per sweep.

* :mod:`.executor`: the ``windows`` executor (concurrency, deadlines, retries)
* :mod:`.client`: one WinRS round trip with pywinrm
* :mod:`.script`: script delivery, parameters as data, the batch and its result
* :mod:`.settings`: ``plugins.windows`` settings, target options, credentials
* :mod:`.checks`: the plugin's own checks and runbooks
"""

from .executor import WindowsExecutor
from .settings import Settings, TargetOptions

__all__ = ["Settings", "TargetOptions", "WindowsExecutor"]
