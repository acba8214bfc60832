"""JSON responses (orjson) and the contract's error shape."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSON:
    """`{"error": {"code", "message"}}`, the only error body the API ever sends."""
    return JSON({"error": {"code": code, "message": message}, **extra}, status_code=status, headers=headers)
