"""One record of a JSON-lines file, checked: the readers of every format share it, so a bad line gets the same
clear error everywhere (the file and line, what is wrong, the reader's own error class)."""

from __future__ import annotations

import json
from typing import Any


def json_object(line: str | bytes, where: str, error: type[Exception] = ValueError, what: str = "JSON record"
                ) -> dict[str, Any]:
    """``line`` parsed as a JSON object; ``error(f"{where}: ...")`` for invalid JSON or another JSON type."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise error(f"{where}: not a {what} ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise error(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


__all__ = ["json_object"]
