"""Exceptions with messages meant for users: one line saying what is wrong and how to fix it."""


class LftmlError(ValueError):
    """Bad user input or an unusable file. The CLI prints ``error: <message>`` and exits 2."""


class FileFormatError(LftmlError):
    """A file is missing, damaged, or was not written by lftml (or by the expected component)."""


class WriteError(LftmlError):
    """Writing a file failed (a full disk, an I/O error, a read-only file system): the same one-line
    message as any :class:`LftmlError`. A caller running many writers (``lftml scan``) stops at the
    first one instead of starting more writes that would fail the same way. ``errno`` is the
    ``OSError``'s, where there was one."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message, errno)
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0])
