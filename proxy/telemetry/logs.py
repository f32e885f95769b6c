"""Structured JSON logs: one object per line on stderr, so any log shipper can parse them.

Secrets never reach a log: request headers are not logged, and virtual keys appear only as
their key id (a hash prefix).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line with its `extra=` fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def log_config(level: str = "info") -> dict:
    """A `logging.config.dictConfig` dict (also given to uvicorn) that routes everything to JSON."""
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": lvl},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "LiteLLM": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
            "httpx": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        },
    }


def configure_logging(level: str = "info") -> None:
    import logging.config

    logging.config.dictConfig(log_config(level))
    logging.captureWarnings(True)
    sys.excepthook = _json_excepthook


def _json_excepthook(etype, value, tb) -> None:  # pragma: no cover - last resort
    logging.getLogger("proxy").critical("uncaught exception", exc_info=(etype, value, tb))
