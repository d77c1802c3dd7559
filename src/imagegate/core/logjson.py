"""The server log as JSON lines (`log_format = "json"`), for log pipelines that want
fields rather than text to parse."""

import json
import logging
from datetime import UTC, datetime
from typing import Any

from imagegate.core.tracing import current_trace_id


class JsonLines(logging.Formatter):
    """One JSON object per record, always on one line: time, level, logger, message;
    `trace_id` while a traced call is being served; `exception` (type, message and
    traceback as one string) when there is one. A traceback never spills onto lines of
    its own, where a pipeline would read each as a record."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = current_trace_id()
        if trace_id is not None:
            line["trace_id"] = trace_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)
