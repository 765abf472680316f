"""Exceptions with messages meant for users: one line saying what is wrong and how to fix it."""


class LftmlError(ValueError):
    """Bad user input or an unusable file. The CLI prints ``error: <message>`` and exits 2."""


class FileFormatError(LftmlError):
    """A file is missing, damaged, or was not written by lftml (or by the expected component)."""
