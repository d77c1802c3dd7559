"""The audit log: one JSON line per tool call. Never a token; prompts only if allowed."""

import json
import os
import sys
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from imagegate.core.errors import ConfigError

OFF = "off"
STDERR = "-"


@dataclass(frozen=True)
class AuditRecord:
    time: float
    subject: str
    tool: str
    relay: str | None
    outcome: str
    """ok | denied (ACL) | refused (bad request, not found, quota, moderation, ...) |
    not_confirmed (a paid call the user declined or couldn't be asked about) |
    input_required (a 2026-07-28 client was asked to confirm) | upstream_error (the
    relay's upstream failed) | error (unexpected)"""
    images: int
    estimated_cost: float | None
    duration_ms: float
    detail: str | None = None
    confirmation: str | None = None
    """Paid relays: paid:auto, accepted, declined, cancel or unsupported."""
    prompt: str | None = None
    trace_id: str | None = None
    """The call's trace (32 hex digits), when traces are on: the line leads to it."""

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["time"] = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds")
        for optional in ("prompt", "trace_id"):
            if data[optional] is None:
                del data[optional]
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


class AuditLog:
    """Appends lines to a file (created 0640), to stderr (the journal under systemd), or
    nowhere. One write per line, under a lock, so lines never interleave."""

    def __init__(self, destination: str) -> None:
        self._lock = threading.Lock()
        self._stream: TextIO | None = None
        if destination == OFF:
            return
        if destination == STDERR:
            self._stream = sys.stderr
            return
        path = Path(destination)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as err:
            raise ConfigError(f"audit_log: cannot open {path}: {err.strerror}") from None
        self._stream = os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def write(self, record: AuditRecord) -> None:
        if self._stream is None:
            return
        line = record.to_json() + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    def close(self) -> None:
        if self._stream is not None and self._stream is not sys.stderr:
            self._stream.close()
