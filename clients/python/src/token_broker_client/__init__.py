"""Access tokens for long-running tasks from token-broker, with a task key."""

from .client import AccessToken, TokenBroker
from .errors import (
    BrokerError,
    ConfigurationError,
    DatabaseUnavailable,
    Forbidden,
    InvalidScope,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    TokenExpired,
    TokenFailed,
    TokenGone,
    TokenNotFound,
    TokenPending,
    TokenRevoked,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "AccessToken",
    "BrokerError",
    "ConfigurationError",
    "DatabaseUnavailable",
    "Forbidden",
    "InvalidScope",
    "ProviderError",
    "ProviderUnavailable",
    "RateLimited",
    "TokenBroker",
    "TokenExpired",
    "TokenFailed",
    "TokenGone",
    "TokenNotFound",
    "TokenPending",
    "TokenRevoked",
    "Unauthorized",
    "Unavailable",
]
