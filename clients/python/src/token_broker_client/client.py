"""The task's side of token-broker: a task key (or the workload's own platform token) in, a
fresh access token out."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generator, Mapping, Optional

import httpx

from .errors import BrokerError, ConfigurationError, Unavailable, from_answer, from_oauth

ACCESS_TOKEN_PATH = "/api/auth/manager/access-token"
#: RFC 8693 token exchange, where a workload presents its platform token.
TOKEN_PATH = "/api/auth/manager/token"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
#: A token is renewed this long before it expires, or a tenth of its life if that is shorter.
RENEW_MARGIN = 60.0


@dataclass(frozen=True)
class AccessToken:
    """An access token and when it stops working (on this process's monotonic clock)."""

    value: str = field(repr=False)
    expires_in: float
    scope: Optional[str]
    fetched_at: float

    @property
    def expires_at(self) -> float:
        return self.fetched_at + self.expires_in

    def fresh(self, now: float) -> bool:
        margin = min(RENEW_MARGIN, self.expires_in / 10 + 1)
        return now < self.expires_at - margin


class _Secret:
    """A task key that never shows in a repr, a log line or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "_Secret('***')"


class TokenBroker:
    """Gets access tokens for one task from the broker, reusing each until shortly before it
    expires. Safe to share between threads and between asyncio tasks.

    The task proves itself with a task key, or with its platform's own token (a Kubernetes
    projected service-account token, a CI id token) in `workload_token_file`, which is read
    again for every exchange because the platform rewrites it. `grant` (a
    persistentTokenId) picks the grant when the workload is bound to several."""

    def __init__(
        self,
        url: str,
        task_key: Optional[str] = None,
        *,
        workload_token_file: Optional[str | Path] = None,
        grant: Optional[str] = None,
        scope: Optional[str] = None,
        timeout: float = 10.0,
        transport: Optional[httpx.BaseTransport] = None,
        async_transport: Optional[httpx.AsyncBaseTransport] = None,
    ):
        if not url or not url.startswith(("http://", "https://")):
            raise ConfigurationError("configuration", f"the broker URL {url!r} is not http(s)")
        if task_key is not None and workload_token_file is not None:
            raise ConfigurationError(
                "configuration", "give a task key or a workload token file, not both"
            )
        key = (task_key or "").strip()
        if workload_token_file is None and not key:
            raise ConfigurationError("configuration", "the task key is empty")
        self.url = url.rstrip("/")
        self.scope = scope
        self.grant = grant
        self._key = _Secret(key)
        self._workload_file = Path(workload_token_file) if workload_token_file else None
        self._timeout = timeout
        self._transport = transport
        self._async_transport = async_transport
        self._cached: Optional[AccessToken] = None
        self._lock = threading.Lock()
        self._async_locks: dict[int, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"TokenBroker(url={self.url!r}, scope={self.scope!r})"

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None, **options: Any) -> "TokenBroker":
        """`TOKEN_BROKER_URL`, and the key from `TOKEN_BROKER_TASK_KEY` or the file named by
        `TOKEN_BROKER_TASK_KEY_FILE` — or, instead of a key, the platform token file named by
        `TOKEN_BROKER_WORKLOAD_TOKEN_FILE` (with `TOKEN_BROKER_GRANT` to pick a grant)."""
        env = os.environ if env is None else env
        url = env.get("TOKEN_BROKER_URL", "")
        if not url:
            raise ConfigurationError("configuration", "TOKEN_BROKER_URL is not set")
        workload = env.get("TOKEN_BROKER_WORKLOAD_TOKEN_FILE", "").strip()
        has_key = env.get("TOKEN_BROKER_TASK_KEY", "").strip() or env.get(
            "TOKEN_BROKER_TASK_KEY_FILE", ""
        ).strip()
        if workload and has_key:
            raise ConfigurationError(
                "configuration",
                "set a task key (TOKEN_BROKER_TASK_KEY or TOKEN_BROKER_TASK_KEY_FILE) or "
                "TOKEN_BROKER_WORKLOAD_TOKEN_FILE, not both",
            )
        if workload:
            grant = env.get("TOKEN_BROKER_GRANT", "").strip() or None
            return cls(url, workload_token_file=workload, grant=grant, **options)
        key = env.get("TOKEN_BROKER_TASK_KEY", "").strip()
        if not key and env.get("TOKEN_BROKER_TASK_KEY_FILE"):
            path = Path(env["TOKEN_BROKER_TASK_KEY_FILE"])
            try:
                key = path.read_text().strip()
            except OSError as e:
                raise ConfigurationError(
                    "configuration", f"cannot read the task key file {path}: {e.strerror}"
                ) from None
            if not key:
                raise ConfigurationError("configuration", f"the task key file {path} is empty")
        if not key:
            raise ConfigurationError(
                "configuration",
                "set TOKEN_BROKER_TASK_KEY, TOKEN_BROKER_TASK_KEY_FILE or "
                "TOKEN_BROKER_WORKLOAD_TOKEN_FILE",
            )
        return cls(url, key, **options)

    # --- tokens -------------------------------------------------------------------------

    def access_token(self) -> str:
        """A valid access token: the cached one while it is fresh, else a new one."""
        return self.token().value

    def token(self) -> AccessToken:
        with self._lock:
            cached = self._cached
            if cached is not None and cached.fresh(time.monotonic()):
                return cached
            with httpx.Client(timeout=self._timeout, transport=self._transport) as http:
                fetched = self._answer(self._send(http))
            self._cached = fetched
            return fetched

    async def aaccess_token(self) -> str:
        """`access_token` for asyncio: concurrent tasks share one request."""
        return (await self.atoken()).value

    async def atoken(self) -> AccessToken:
        loop_id = id(asyncio.get_running_loop())
        lock = self._async_locks.setdefault(loop_id, asyncio.Lock())
        async with lock:
            cached = self._cached
            if cached is not None and cached.fresh(time.monotonic()):
                return cached
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._async_transport
            ) as http:
                try:
                    response = await http.post(**self._request())
                except httpx.HTTPError as e:
                    raise self._unreachable(e) from None
            fetched = self._answer(response)
            with self._lock:
                self._cached = fetched
            return fetched

    def invalidate(self) -> None:
        """Forget the cached token (e.g. after an API refused it)."""
        with self._lock:
            self._cached = None

    @property
    def auth(self) -> "BrokerAuth":
        """An `httpx.Auth` for the task's own API calls."""
        return BrokerAuth(self)

    # --- the request --------------------------------------------------------------------

    def _request(self) -> dict:
        """The POST to send: the key to `access-token`, or the platform token, read now, to
        the token exchange."""
        if self._workload_file is None:
            body = {"scope": self.scope} if self.scope else {}
            return {
                "url": self.url + ACCESS_TOKEN_PATH,
                "json": body,
                "headers": {"Authorization": f"Bearer {self._key.reveal()}"},
            }
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": self._workload_token(),
            "subject_token_type": JWT_TYPE,
        }
        if self.grant:
            form["resource"] = f"urn:token-broker:grant:{self.grant}"
        if self.scope:
            form["scope"] = self.scope
        return {"url": self.url + TOKEN_PATH, "data": form}

    def _workload_token(self) -> str:
        path = self._workload_file
        try:
            token = path.read_text().strip() if path else ""
        except OSError as e:
            raise ConfigurationError(
                "configuration", f"cannot read the workload token file {path}: {e.strerror}"
            ) from None
        if not token:
            raise ConfigurationError("configuration", f"the workload token file {path} is empty")
        return token

    def _send(self, http: httpx.Client) -> httpx.Response:
        try:
            return http.post(**self._request())
        except httpx.HTTPError as e:
            raise self._unreachable(e) from None

    def _unreachable(self, error: httpx.HTTPError) -> Unavailable:
        return Unavailable("unreachable", f"cannot reach the broker at {self.url}: {error}")

    def _answer(self, response: httpx.Response) -> AccessToken:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise BrokerError(
                "bad_answer",
                f"the broker answered HTTP {response.status_code} without JSON",
                status=response.status_code,
            )
        if self._workload_file is not None:
            return _exchanged(response, body)
        if response.status_code != 200:
            raise from_answer(
                response.status_code,
                str(body.get("error", "error")),
                str(body.get("message", "no details")),
                _retry_after(response),
            )
        value, expires_in = body.get("accessToken"), body.get("expiresIn")
        if not isinstance(value, str) or not isinstance(expires_in, (int, float)):
            raise BrokerError("bad_answer", "the broker's answer has no accessToken/expiresIn")
        return AccessToken(value, float(expires_in), body.get("scope"), time.monotonic())


class BrokerAuth(httpx.Auth):
    """Adds the task's access token to each request; on a 401 gets a fresh token and retries
    once (the API may have seen the token revoked or expired before we did)."""

    requires_request_body = True  # so the one retry can send the body again

    def __init__(self, broker: TokenBroker):
        self._broker = broker

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._broker.access_token()}"
        response = yield request
        if response.status_code == 401:
            self._broker.invalidate()
            request.headers["Authorization"] = f"Bearer {self._broker.access_token()}"
            yield request

    async def async_auth_flow(self, request: httpx.Request):  # type: ignore[override]
        request.headers["Authorization"] = f"Bearer {await self._broker.aaccess_token()}"
        response = yield request
        if response.status_code == 401:
            self._broker.invalidate()
            request.headers["Authorization"] = f"Bearer {await self._broker.aaccess_token()}"
            yield request


def _exchanged(response: httpx.Response, body: dict) -> AccessToken:
    """A token exchange's answer (RFC 8693 §2.2), or its OAuth error as our exceptions."""
    if response.status_code != 200:
        error = str(body.get("error", "error"))
        description = str(body.get("error_description", "no details"))
        raise from_oauth(response.status_code, error, description, _retry_after(response))
    value, expires_in = body.get("access_token"), body.get("expires_in")
    if not isinstance(value, str) or not isinstance(expires_in, (int, float)):
        raise BrokerError("bad_answer", "the broker's answer has no access_token/expires_in")
    return AccessToken(value, float(expires_in), body.get("scope"), time.monotonic())


def _retry_after(response: httpx.Response) -> Optional[float]:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None
