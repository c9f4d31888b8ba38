"""Errors split by blame: client errors (4xx) and server errors (5xx), each carrying its OpenAI shape.

One handler at the edge renders any ``LlmaasError`` as ``{"error": {message, type, param, code}}``;
errors cross NATS as ``wire.WireError`` and come back as the same class.
"""

from __future__ import annotations

from llmaas.wire import WireError


class LlmaasError(Exception):
    """Base error: HTTP status, OpenAI ``type`` and ``code``, optional ``param`` and retry hint."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    retryable: bool | None = None
    """False tells the OpenAI SDKs not to retry (``x-should-retry: false``); None leaves it to them."""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    """Extra response headers (the rate-limit state on a 429)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after_s = retry_after_s

    def to_wire(self) -> WireError:
        return WireError(
            status=self.status,
            type=self.type,
            message=self.message,
            code=self.code,
            param=self.param,
            retry_after_s=self.retry_after_s,
        )


class ClientError(LlmaasError):
    """The caller is to blame (4xx); retrying the same request will not help."""

    status = 400
    type = "invalid_request_error"


class InvalidRequest(ClientError):
    status = 400


class NotFound(ClientError):
    status = 404


class Unauthenticated(ClientError):
    """No key, or one that is wrong, expired or revoked; the message never repeats the secret."""

    status = 401
    code = "invalid_api_key"


class PermissionDenied(ClientError):
    status = 403
    code = "permission_denied"


class Gone(ClientError):
    """The resource existed and was removed on purpose (a retired model)."""

    status = 410


class Conflict(ClientError):
    status = 409
    code = "conflict"


class RateLimited(ClientError):
    """Too many requests or tokens in the current window: retry after ``retry_after_s``."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, type_: str, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.type = type_


class QuotaExceeded(ClientError):
    """The monthly budget is spent: retrying will not help until the next month or a higher tier."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"
    retryable = False


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class ServerError(LlmaasError):
    """We are to blame (5xx)."""

    status = 500
    type = "server_error"
    code = "internal_error"


class Unavailable(ServerError):
    """Temporarily unable to serve (no worker, NATS down, overload); clients may retry after a while."""

    status = 503
    code = "service_unavailable"


class UpstreamFailed(ServerError):
    """A worker failed or vanished while serving the request."""

    status = 502
    code = "worker_failed"


class RemoteError(LlmaasError):
    """An error that arrived over the wire from another stage; keeps the sender's status and codes."""

    def __init__(self, wire: WireError) -> None:
        super().__init__(wire.message, param=wire.param, code=wire.code, retry_after_s=wire.retry_after_s)
        self.status = wire.status
        self.type = wire.type


class ClientClosed(ClientError):
    """The client went away before the answer was complete (nginx's 499); nobody reads this reply."""

    status = 499
    code = "client_closed"
