"""One error vocabulary: every service raises a subclass of :class:`NatteryError`; one handler answers.

Library errors are translated at the boundary (``raise DependencyUnavailable("influxdb") from err``).
"""

from __future__ import annotations

from typing import Any


class NatteryError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class BadRequest(NatteryError):
    status_code = 400
    code = "bad_request"


class Unauthorized(NatteryError):
    status_code = 401
    code = "unauthorized"


class Forbidden(NatteryError):
    status_code = 403
    code = "forbidden"


class NotFound(NatteryError):
    status_code = 404
    code = "not_found"


class Conflict(NatteryError):
    status_code = 409
    code = "conflict"


class Unprocessable(NatteryError):
    status_code = 422
    code = "unprocessable"


class TooManyRequests(NatteryError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after_s: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


class DependencyUnavailable(NatteryError):
    status_code = 503
    code = "dependency_unavailable"
