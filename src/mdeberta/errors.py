"""The one base of every error the library raises on purpose (bad input, a file that cannot be used).

``mdeberta`` commands print such an error (and an ``OSError``: a missing file, a full disk) as one line, ``error:
<message>``, and exit with status 2; ``cli.main`` is the one place that does it, no command catches errors itself. A
traceback is shown only with ``--debug`` (or ``MDEBERTA_DEBUG=1``). Anything else that escapes is a bug and keeps its
traceback.
"""


class MdebertaError(Exception):
    """Base of the library's errors; the message says what is wrong and names the file, flag or key."""


class UsageError(MdebertaError, ValueError):
    """An argument that cannot work (a size below 1, a length past the model's positions, ...)."""


class CheckpointError(MdebertaError, RuntimeError):
    """A checkpoint cannot be read or does not fit the model; the message names the file or key."""


class MissingFileError(MdebertaError, FileNotFoundError):
    """A file or folder the user named does not exist (or holds none of the files needed)."""
