"""Loguru set-up shared by every process.

Stdlib logging (dramatiq, uvicorn, psycopg) is routed into loguru so that one
sink decides the format: human text by default, one JSON object per line with
`LOG_FORMAT=json`. Context such as `request_id` and `job_id` is attached with
`logger.bind(...)` / `logger.contextualize(...)` and lands in `extra`.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TYPE_CHECKING

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

    from jobs.settings import Settings

_TEXT_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[component]}</cyan> {message}{extra[context]}"
)


#: A credential in a query string: uvicorn logs each WebSocket's path *with* its query ("[accepted]"),
#: and browsers can only authenticate streams with `?access_token=`.
_QUERY_SECRET = re.compile(r"(access_token=)[^&\s\"']+")


class InterceptHandler(logging.Handler):
    """Send stdlib log records to loguru, keeping the caller's location."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = logging.currentframe(), 2
        while frame is not None and frame.f_code.co_filename == logging.__file__:
            frame, depth = frame.f_back, depth + 1  # type: ignore[assignment]
        message = _QUERY_SECRET.sub(r"\1[redacted]", record.getMessage())
        logger.opt(depth=depth, exception=record.exc_info).log(level, message)


def _patch(record: Record) -> None:
    extra = record["extra"]
    extra.setdefault("component", record["name"] or "")
    context = {k: v for k, v in extra.items() if k not in ("component", "context")}
    extra["context"] = "".join(f" {k}={v}" for k, v in context.items())


def setup_logging(settings: Settings, component: str) -> None:
    """Install the single loguru sink for this process and capture stdlib logging."""
    # diagnose=False everywhere: loguru would otherwise print local variables
    # (prompts, keys) in tracebacks.
    logger.remove()
    logger.configure(extra={"component": component}, patcher=_patch)
    if settings.log_format == "json":
        logger.add(sys.stderr, level=settings.log_level, serialize=True, backtrace=False, diagnose=False)
    else:
        logger.add(sys.stderr, level=settings.log_level, format=_TEXT_FORMAT, colorize=None,
                   backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[InterceptHandler()], level=logging.INFO, force=True)
    for name in ("uvicorn", "uvicorn.error", "dramatiq", "psycopg", "psycopg.pool"):
        std = logging.getLogger(name)
        std.handlers = [InterceptHandler()]
        std.propagate = False
    # Access logs are replaced by the API's own request log line.
    logging.getLogger("uvicorn.access").disabled = True
