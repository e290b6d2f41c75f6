"""Running ``mdeberta`` commands in-process and checking their one-line errors."""

from __future__ import annotations

import logging
import re

from mdeberta.cli import main


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def assert_cli_error(capsys, argv: list[str], pattern: str) -> str:
    """The command exits 2 with a message matching ``pattern`` (a regex: the ``error:`` line of the CLI's error
    boundary, or a command's logged error) and no traceback; returns that text."""
    capsys.readouterr()
    handler = _Collect()
    logging.getLogger("mdeberta").addHandler(handler)
    try:
        code = main(argv)
    finally:
        logging.getLogger("mdeberta").removeHandler(handler)
    err = capsys.readouterr().err + "\n".join(handler.lines)
    assert code == 2, f"exit {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    assert re.search(pattern, err), f"{pattern!r} not in:\n{err}"
    return err
