"""Errors of the provider layer. Connectors catch these; the HTTP API maps them into ``NatteryError``.

- :class:`ProviderUnavailable`: timeouts, connection errors, 5xx after the retries, the circuit breaker
  open, the rate limiter unreachable. Try again later; nothing is wrong with the request.
- :class:`ProviderRateLimited`: 429 whose ``Retry-After`` is longer than we are willing to wait, or our
  own shared rate limit would make us wait too long. ``retry_after_s`` says when to come back.
- :class:`ProviderRejected`: a 4xx other than 429 (after the retries, which a 4xx never gets): the
  request, credentials or settings are wrong. Carries the status and a short excerpt of the body.
- :class:`ProviderDataInvalid`: raised by connectors when a 2xx body does not parse or validate.
"""

from __future__ import annotations

from typing import Any

from nattery_shared.errors import DependencyUnavailable, NatteryError, TooManyRequests

EXCERPT_CHARS = 300


class ProviderError(Exception):
    """Base of everything the provider layer raises. ``provider`` and ``endpoint`` say where."""

    def __init__(self, provider: str, message: str, *, endpoint: str | None = None) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.endpoint = endpoint
        self.message = message

    def to_http(self) -> NatteryError:
        """The project error this becomes when it reaches an HTTP answer."""
        return DependencyUnavailable(str(self), details={"provider": self.provider})


class ProviderUnavailable(ProviderError):
    """Cannot get an answer now (timeouts, 5xx after retries, breaker open)."""


class ProviderRateLimited(ProviderUnavailable):
    def __init__(
        self, provider: str, message: str, *, retry_after_s: float, endpoint: str | None = None
    ) -> None:
        super().__init__(provider, message, endpoint=endpoint)
        self.retry_after_s = retry_after_s

    def to_http(self) -> NatteryError:
        return TooManyRequests(
            str(self), retry_after_s=max(1, int(self.retry_after_s)), details={"provider": self.provider}
        )


class ProviderRejected(ProviderError):
    """A 4xx (not 429): the request or the credentials are wrong; retrying the same will not help."""

    def __init__(
        self, provider: str, status_code: int, body: bytes, *, endpoint: str | None = None, url: str = ""
    ) -> None:
        self.status_code = status_code
        self.body = body[:65536]
        self.excerpt = body[:EXCERPT_CHARS].decode("utf-8", errors="replace")
        self.url = url
        super().__init__(provider, f"HTTP {status_code}: {self.excerpt}", endpoint=endpoint)

    def to_http(self) -> NatteryError:
        return DependencyUnavailable(
            f"{self.provider} refused the request (HTTP {self.status_code})",
            details={"provider": self.provider, "status": self.status_code, "excerpt": self.excerpt},
        )


class ProviderDataInvalid(ProviderError):
    """A 2xx answer whose body does not parse or validate (raised by connectors)."""

    def __init__(
        self, provider: str, message: str, *, endpoint: str | None = None, excerpt: str | bytes = ""
    ) -> None:
        if isinstance(excerpt, bytes):
            excerpt = excerpt[:EXCERPT_CHARS].decode("utf-8", errors="replace")
        self.excerpt = excerpt[:EXCERPT_CHARS]
        super().__init__(provider, message, endpoint=endpoint)

    def to_http(self) -> NatteryError:
        details: dict[str, Any] = {"provider": self.provider, "excerpt": self.excerpt}
        return DependencyUnavailable(
            f"{self.provider} answered data we cannot read: {self.message}", details=details
        )
