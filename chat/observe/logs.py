"""Logging set-up: one line per event, plain text or one JSON object per line.

Only the standard library: gunicorn.conf.py loads this file on its own (by
path, without the ``chat`` package) to give gunicorn's own lines the same
format.
"""

from __future__ import annotations

import json
import logging
import sys
import time

# Record attributes (``extra=``) that become fields of their own.
FIELDS = (
    "sid",
    "room",
    "instance",
    "event",
    "reason",
    "transport",
    "host",
    "port",
    "pid",
    "release",
    "mode",
    # chat/observe/tally.py's counts per interval.
    "connects",
    "logins",
    "disconnects",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (LOG_FORMAT=json)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in FIELDS:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """One plain line, the fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [
            f"{key}={getattr(record, key)}"
            for key in FIELDS
            if key != "instance" and hasattr(record, key)
        ]
        return f"{line} {' '.join(fields)}" if fields else line


def configure_logging(fmt: str, level: str) -> logging.Handler | None:
    """Send every logger of the process to stderr in the chosen format, once.

    The root logger gets the handler, so library lines (redis-py, gevent,
    python-socketio) come out in the same format as ours; ``chat`` loggers
    log at ``level``, the others at WARNING and above.
    """
    root = logging.getLogger()
    if getattr(root, "_chat_configured", False):
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("chat").setLevel(level.upper())
    root._chat_configured = True
    return handler


def name_instance_everywhere(instance_filter: logging.Filter) -> None:
    """gunicorn's own lines from this worker name the instance too."""
    for name in ("gunicorn.error", "gunicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(instance_filter)


class InstanceFilter(logging.Filter):
    """Puts this instance's id on every record, so a line names its instance."""

    def __init__(self, instance_id: str) -> None:
        super().__init__()
        self.instance_id = instance_id

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "instance"):
            record.instance = self.instance_id
        return True


def gunicorn_logconfig(level: str, access: bool) -> dict:
    """gunicorn's ``logconfig_dict`` for one JSON object per line; access
    lines only when ``access`` (ACCESS_LOG is set)."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": handler,
            # ACCESS_LOG=- is stdout, in either format.
            "stdout": {**handler, "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "gunicorn.error": {
                "level": level.upper(),
                "handlers": ["stderr"],
                "propagate": False,
            },
            "gunicorn.access": {
                "level": "INFO" if access else "CRITICAL",
                "handlers": ["stdout"] if access else [],
                "propagate": False,
            },
        },
        "root": {"level": "WARNING", "handlers": []},
    }
