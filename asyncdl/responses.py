"""What the Allen API's JSON answers mean (pure): rows on success, ``ApiError`` on ``success: false``."""

from __future__ import annotations

from typing import Any

from .errors import ApiError, TransientError


def rows(payload: Any, url: str) -> list[dict[str, Any]]:
    """The ``msg`` rows of an API answer.

    ``success: false`` is the API saying no (unknown data set, bad query): an ``ApiError`` carrying its
    message. An answer of the wrong shape is treated as a broken response, worth retrying.
    """
    if not isinstance(payload, dict) or "success" not in payload:
        raise TransientError("answer is not an Allen API envelope", url)
    if payload["success"] is not True:
        message = payload.get("msg")
        raise ApiError(f"API error: {str(message)[:300] if message else 'success is false'}", url)
    msg = payload.get("msg")
    if not isinstance(msg, list) or not all(isinstance(row, dict) for row in msg):
        raise TransientError("answer's msg is not a list of records", url)
    return msg
