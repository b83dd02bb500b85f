"""The broker's error codes as exceptions: `{"error": code, "message": ...}` becomes one."""

from __future__ import annotations

from typing import Optional


class BrokerError(Exception):
    """An error answer from the broker, or no usable answer at all."""

    def __init__(
        self,
        code: str,
        message: str,
        status: Optional[int] = None,
        retry_after: Optional[float] = None,
    ):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after


class ConfigurationError(BrokerError):
    """The client was set up wrongly (no URL, no key, an unreadable key file)."""


class Unauthorized(BrokerError):
    """The task key is unknown, revoked, expired or used up (401)."""


class Forbidden(BrokerError):
    """The key may not be used from here or for this token (403)."""


class TokenNotFound(BrokerError):
    """No such persistent token for this key (404)."""


class TokenPending(BrokerError):
    """The user has not completed the consent yet (409); try again later."""


class TokenGone(BrokerError):
    """The grant ended for good (410); the user must consent again."""


class TokenRevoked(TokenGone):
    """The user or an operator revoked the grant."""


class TokenExpired(TokenGone):
    """The grant reached its maximum age or idled out."""


class TokenFailed(TokenGone):
    """The provider ended the grant (or the consent failed)."""


class InvalidScope(BrokerError):
    """The scope asked for is broader than the key or the grant allows."""


class RateLimited(BrokerError):
    """Too many requests (429); see retry_after."""


class Unavailable(BrokerError):
    """A transient failure (503): worth retrying after retry_after."""


class ProviderUnavailable(Unavailable):
    """The identity provider is down, slow or busy."""


class DatabaseUnavailable(Unavailable):
    """The broker's store is unavailable."""


class ProviderError(BrokerError):
    """The provider refused the broker's own request (502): a misconfiguration there."""


_BY_CODE = {
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "token_not_found": TokenNotFound,
    "token_pending": TokenPending,
    "token_revoked": TokenRevoked,
    "token_expired": TokenExpired,
    "token_failed": TokenFailed,
    "invalid_scope": InvalidScope,
    "rate_limited": RateLimited,
    "provider_unavailable": ProviderUnavailable,
    "provider_busy": ProviderUnavailable,
    "database_unavailable": DatabaseUnavailable,
    "provider_error": ProviderError,
}


def from_answer(
    status: int, code: str, message: str, retry_after: Optional[float]
) -> BrokerError:
    """The exception for one error answer; unknown codes keep the status's family."""
    kind = _BY_CODE.get(code)
    if kind is None:
        kind = Unavailable if status == 503 else BrokerError
    return kind(code, message, status=status, retry_after=retry_after)


def from_oauth(
    status: int, error: str, description: str, retry_after: Optional[float]
) -> BrokerError:
    """The exception for a token exchange's OAuth error (RFC 6749 §5.2): a refused platform
    token or binding is `Unauthorized`, a scope beyond it `InvalidScope`, a wait `RateLimited`
    or `Unavailable`; `invalid_target` (name the grant) and the rest keep their code."""
    if error == "invalid_request" and status == 400:
        kind: type[BrokerError] = Unauthorized
    elif error == "invalid_scope":
        kind = InvalidScope
    elif status == 429:
        kind = RateLimited
    elif status == 503 or error == "temporarily_unavailable":
        kind = Unavailable
    else:
        kind = BrokerError
    return kind(error, description, status=status, retry_after=retry_after)
