"""Secrets, referenced by name and read from files when used.

The config names a secret (``"credential": "winrm-admin"``); the value comes
from systemd credentials (``$CREDENTIALS_DIRECTORY/<name>``, set up by
``LoadCredential=``) or from a file named in ``secrets.files``, so it is never
in the config file, the Nix store, logs or evidence. :class:`Secret` hides
its value from ``repr``/``str`` so that an accidental log line or exception
message shows ``Secret('winrm-admin')`` and nothing more.

Every use stats the file, and reads it again only when it changed: a sweep
asks for a host's credential once per host, and re-reading one file for
fifty hosts every sweep bought nothing. A rotated secret is still seen at
its next use.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

ENV_CREDENTIALS = "CREDENTIALS_DIRECTORY"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")  # as config.py: a file name, never a path


class SecretError(Exception):
    pass


class Secret:
    __slots__ = ("name", "_value")

    def __init__(self, name: str, value: str):
        self.name = name
        self._value = value

    def reveal(self) -> str:
        """The secret's value. Call only where it is handed to a client."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.name!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.name == self.name and other._value == self._value

    def __hash__(self) -> int:
        return hash(self.name)


class SecretStore:
    #: A file changed this recently (ctime, seconds) is read again at every
    #: use: a rewrite of the same size within one tick of the file system's
    #: clock would leave its stat unchanged (git's "racily clean" rule).
    SETTLE = 2.0

    def __init__(
        self,
        directory: Path | None = None,
        files: Mapping[str, Path] | None = None,
        environ: Mapping[str, str] | None = None,
    ):
        env = os.environ if environ is None else environ
        if directory is None and env.get(ENV_CREDENTIALS):
            directory = Path(env[ENV_CREDENTIALS])
        self.directory = directory
        self.files = dict(files or {})
        # path -> (stat signature, secret), for files that had settled when read
        self._cache: dict[Path, tuple[tuple[int, ...], Secret]] = {}

    def path_of(self, name: str) -> Path:
        if not _NAME.match(name):
            raise SecretError(f"secret name {name!r}: expected letters, digits, '.', '_' or '-' (no paths)")
        if name in self.files:
            return Path(self.files[name])
        if self.directory is not None:
            return self.directory / name
        raise SecretError(
            f"secret {name!r}: not listed in secrets.files and no credentials directory "
            f"(${ENV_CREDENTIALS} is unset and secrets.directory is not configured)"
        )

    def exists(self, name: str) -> bool:
        try:
            return self.path_of(name).is_file()
        except (SecretError, OSError):
            return False

    def get(self, name: str) -> Secret:
        path = self.path_of(name)
        try:
            st = path.stat()
        except OSError as exc:
            self._cache.pop(path, None)
            raise SecretError(f"secret {name!r}: cannot read {path}: {exc.strerror}") from None
        sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == sig and cached[1].name == name:
            return cached[1]
        read_at = time.time_ns()
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SecretError(f"secret {name!r}: cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SecretError(f"secret {name!r}: {path} is not UTF-8 text") from None
        # A trailing newline from `echo secret > file` is not part of it.
        secret = Secret(name, raw.rstrip("\r\n"))
        if read_at - st.st_ctime_ns >= self.SETTLE * 1e9:
            self._cache[path] = (sig, secret)
        else:
            self._cache.pop(path, None)
        return secret
