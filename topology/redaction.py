"""Secrets never reach output: every log record and every error the CLI prints has the secrets in
force (passwords, the API token: ``Settings.secrets``) replaced by ``MASK``.

Log records are redacted where they are made (a log record factory), so it holds whichever
handlers Faust or a library install later, and for exception text too.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from typing import Any

from topology.settings import MASK

_secrets: tuple[str, ...] = ()
_factory = logging.getLogRecordFactory()


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``MASK``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _factory(*args, **kwargs)
    if not _secrets:
        return record
    message = record.getMessage()
    if any(secret in message for secret in _secrets):
        record.msg, record.args = redact(message), ()
    if record.exc_info and record.exc_info[0] is not None:
        # Formatted now, redacted; formatters use exc_text as it is once set.
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
    return record


def install(secrets: Iterable[str]) -> None:
    """Redact ``secrets`` (the longest first, so one that contains another goes whole) from
    every log record made from now on and from ``redact``."""
    global _secrets
    _secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
    logging.setLogRecordFactory(_record)
