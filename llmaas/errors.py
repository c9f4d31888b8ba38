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
