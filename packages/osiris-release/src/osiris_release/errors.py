"""The one error the command reports: a message naming the file or option and what was expected."""


class ReleaseError(Exception):
    """Shown to the user as `error: <message>` with exit status 2, never as a traceback."""
