"""The whole exception tree of cio_worker, in one place so callers can catch all of ours.

```
CioWorkerError
  ConfigError                 a setting is missing or invalid (names the variable)
  ValidationError(ValueError) a job was rejected at enqueue (names the field and the rule)
  EnqueueError                Redis did not take the job; nothing was stored
  DeliveryError               .job_id, .status_code, .body_excerpt
    RetryableError            .retry_after_seconds; try again later
      RateLimitedError        the shared bucket is empty, or Customer.io answered 429
      TransportError          timeout or connection failure (.request_sent: was it ambiguous?)
      ServerError             408 or 5xx
    PermanentError            dead-letter at once
      AuthError               401/403; .credential names the family that failed
      RejectedError           any other 4xx
      UnexpectedResponseError a 2xx body the App API reads cannot understand
  WebhookSignatureError       a reporting webhook failed verification (.reason)
```

Retry decisions depend only on the class: retry `RetryableError`, dead-letter `PermanentError`.
"""

from __future__ import annotations


class CioWorkerError(Exception):
    """Base class of every error cio_worker raises on purpose."""


class ConfigError(CioWorkerError):
    """A setting is missing or invalid; the message names the environment variable."""


class ValidationError(CioWorkerError, ValueError):
    """A job was rejected at enqueue time; nothing was stored.

    Attributes:
        field: the argument (or dotted path inside it) that broke the rule.
        rule: the rule, in words.
    """

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class EnqueueError(CioWorkerError):
    """Redis did not accept the job (unreachable, timed out, refused); nothing was stored."""


class DeliveryError(CioWorkerError):
    """A delivery attempt to Customer.io failed."""

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        status_code: int | None = None,
        body_excerpt: str | None = None,
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.status_code = status_code
        self.body_excerpt = body_excerpt


class RetryableError(DeliveryError):
    """Worth trying again later; `retry_after_seconds` is the server's hint, if any."""

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: float | None = None,
        job_id: str | None = None,
        status_code: int | None = None,
        body_excerpt: str | None = None,
    ) -> None:
        super().__init__(message, job_id=job_id, status_code=status_code, body_excerpt=body_excerpt)
        self.retry_after_seconds = retry_after_seconds


class RateLimitedError(RetryableError):
    """The family's shared bucket is empty or paused, or Customer.io answered 429.

    It never uses up one of the job's attempts: the job was not at fault.
    """


class TransportError(RetryableError):
    """Timeout or connection failure.

    `request_sent` is True when the request may have reached Customer.io (a read timeout after
    the body was written): for messages without a dedup key that outcome is ambiguous.
    """

    def __init__(self, message: str, *, request_sent: bool, job_id: str | None = None) -> None:
        super().__init__(message, job_id=job_id)
        self.request_sent = request_sent


class ServerError(RetryableError):
    """Customer.io answered 408 or 5xx."""


class PermanentError(DeliveryError):
    """Retrying cannot help; the job goes to the dead-letter queue at once."""


class AuthError(PermanentError):
    """401 or 403: the credential of `credential` (track, app or pipelines) was refused."""

    def __init__(
        self,
        message: str,
        *,
        credential: str,
        job_id: str | None = None,
        status_code: int | None = None,
        body_excerpt: str | None = None,
    ) -> None:
        super().__init__(message, job_id=job_id, status_code=status_code, body_excerpt=body_excerpt)
        self.credential = credential


class RejectedError(PermanentError):
    """Customer.io refused the request (a 4xx other than 401, 403, 408 and 429)."""


class UnexpectedResponseError(PermanentError):
    """Customer.io answered 2xx with a body this client cannot read (its contract changed)."""


class WebhookSignatureError(CioWorkerError):
    """A webhook request failed verification; `reason` is missing, malformed, stale or mismatch."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
