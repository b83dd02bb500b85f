"""token-broker-client against a live broker and the test provider.

`tests/api/python_client.rs` starts both, prepares the rows and keys, and runs this file with:
TOKEN_BROKER_URL, TB_TEST_KEY (an active row's key), TB_TEST_USER (its owner's subject),
TB_TEST_REVOKED_KEY (a revoked key), TB_TEST_REVOKED_ROW_KEY (the key of a revoked row),
TB_TEST_GRANT (the active row's id), TB_TEST_WORKLOAD_TOKEN (a platform token of a workload
bound to that row) and TB_TEST_WORKLOAD_WRONG_AUDIENCE (the same workload's token for another
audience).
"""

import asyncio
import base64
import json
import os
import threading

import httpx
import pytest

from token_broker_client import (
    BrokerError,
    ConfigurationError,
    InvalidScope,
    ProviderUnavailable,
    TokenBroker,
    TokenGone,
    TokenRevoked,
    Unauthorized,
    Unavailable,
)

URL = os.environ.get("TOKEN_BROKER_URL")
pytestmark = pytest.mark.skipif(not URL, reason="needs a live broker (tests/api/python_client.rs)")


class Counting(httpx.HTTPTransport):
    def __init__(self):
        super().__init__()
        self.requests = 0
        self._lock = threading.Lock()

    def handle_request(self, request):
        with self._lock:
            self.requests += 1
        return super().handle_request(request)


class AsyncCounting(httpx.AsyncHTTPTransport):
    def __init__(self):
        super().__init__()
        self.requests = 0

    async def handle_async_request(self, request):
        self.requests += 1
        return await super().handle_async_request(request)


def claims(jwt):
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def broker(**options):
    return TokenBroker(URL, os.environ["TB_TEST_KEY"], **options)


def test_from_env_gives_an_access_token_for_the_owner():
    token = TokenBroker.from_env().access_token()
    assert claims(token)["sub"] == os.environ["TB_TEST_USER"]


def test_a_token_is_reused_while_fresh():
    transport = Counting()
    b = broker(transport=transport)
    assert b.access_token() == b.access_token()
    assert transport.requests == 1
    b.invalidate()
    b.access_token()
    assert transport.requests == 2


def test_threads_share_one_request():
    transport = Counting()
    b = broker(transport=transport)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(b.access_token())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1 and len(seen) == 8
    assert transport.requests == 1


def test_asyncio_tasks_share_one_request():
    transport = AsyncCounting()
    b = broker(async_transport=transport)

    async def main():
        return await asyncio.gather(*(b.aaccess_token() for _ in range(8)))

    tokens = asyncio.run(main())
    assert len(set(tokens)) == 1
    assert transport.requests == 1


def test_auth_adds_the_token_and_retries_once_on_401():
    transport = Counting()
    b = broker(transport=transport)
    seen = []

    def api(request):
        seen.append(request.headers["authorization"])
        return httpx.Response(401 if len(seen) == 1 else 200, json={"ok": True})

    with httpx.Client(auth=b.auth, transport=httpx.MockTransport(api)) as http:
        response = http.post("http://api.test/data", json={"x": 1})
    assert response.status_code == 200
    assert len(seen) == 2 and all(h.startswith("Bearer ey") for h in seen)
    assert transport.requests == 2, "the 401 made the client ask the broker again"


def test_auth_does_not_retry_forever():
    b = broker()
    calls = []

    def api(request):
        calls.append(1)
        return httpx.Response(401)

    with httpx.Client(auth=b.auth, transport=httpx.MockTransport(api)) as http:
        assert http.get("http://api.test/").status_code == 401
    assert len(calls) == 2


def test_async_auth_retries_once_on_401():
    b = broker()
    seen = []

    async def api(request):
        seen.append(request.headers["authorization"])
        return httpx.Response(401 if len(seen) == 1 else 200)

    async def main():
        async with httpx.AsyncClient(auth=b.auth, transport=httpx.MockTransport(api)) as http:
            return await http.get("http://api.test/")

    assert asyncio.run(main()).status_code == 200
    assert len(seen) == 2


def test_a_narrower_scope_is_granted_and_a_broader_one_refused():
    assert broker(scope="openid").token().scope == "openid"
    with pytest.raises(InvalidScope) as refused:
        broker(scope="openid admin").access_token()
    assert refused.value.status == 400


def test_a_revoked_key_is_unauthorized():
    with pytest.raises(Unauthorized) as refused:
        TokenBroker(URL, os.environ["TB_TEST_REVOKED_KEY"]).access_token()
    assert refused.value.code == "unauthorized" and refused.value.status == 401


def test_a_revoked_grant_raises_token_revoked():
    with pytest.raises(TokenRevoked) as gone:
        TokenBroker(URL, os.environ["TB_TEST_REVOKED_ROW_KEY"]).access_token()
    assert isinstance(gone.value, TokenGone) and gone.value.status == 410


def test_an_unreachable_broker_is_unavailable():
    with pytest.raises(Unavailable) as down:
        TokenBroker("http://127.0.0.1:9", "tbk_x").access_token()
    assert down.value.code == "unreachable"


def test_a_503_carries_retry_after_and_garbage_is_a_broker_error():
    def busy(request):
        return httpx.Response(
            503,
            headers={"retry-after": "7"},
            json={"error": "provider_unavailable", "message": "down"},
        )

    with pytest.raises(ProviderUnavailable) as e:
        TokenBroker("http://b.test", "tbk_x", transport=httpx.MockTransport(busy)).access_token()
    assert e.value.retry_after == 7.0

    def garbage(request):
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    with pytest.raises(BrokerError) as e:
        TokenBroker("http://b.test", "tbk_x", transport=httpx.MockTransport(garbage)).access_token()
    assert e.value.code == "bad_answer" and e.value.status == 502


def test_from_env_reads_a_key_file_and_refuses_bad_settings(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(os.environ["TB_TEST_KEY"] + "\n")
    env = {"TOKEN_BROKER_URL": URL, "TOKEN_BROKER_TASK_KEY_FILE": str(key_file)}
    assert TokenBroker.from_env(env).access_token().startswith("ey")

    empty = tmp_path / "empty"
    empty.write_text("\n")
    for bad in [
        {"TOKEN_BROKER_TASK_KEY": "tbk_x"},
        {"TOKEN_BROKER_URL": URL},
        {"TOKEN_BROKER_URL": URL, "TOKEN_BROKER_TASK_KEY_FILE": str(tmp_path / "missing")},
        {"TOKEN_BROKER_URL": URL, "TOKEN_BROKER_TASK_KEY_FILE": str(empty)},
        {"TOKEN_BROKER_URL": "ftp://x", "TOKEN_BROKER_TASK_KEY": "tbk_x"},
    ]:
        with pytest.raises(ConfigurationError):
            TokenBroker.from_env(bad)


def test_secrets_never_show_in_reprs():
    b = broker()
    token = b.token()
    assert os.environ["TB_TEST_KEY"] not in repr(b) + repr(b.__dict__)
    assert token.value not in repr(token)


def test_a_workload_token_file_is_exchanged_and_read_again_each_time(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(os.environ["TB_TEST_WORKLOAD_TOKEN"] + "\n")
    env = {"TOKEN_BROKER_URL": URL, "TOKEN_BROKER_WORKLOAD_TOKEN_FILE": str(token_file)}
    b = TokenBroker.from_env(env)
    assert claims(b.access_token())["sub"] == os.environ["TB_TEST_USER"]
    # The platform rewrites the file; the next exchange presents what it holds now.
    token_file.write_text(os.environ["TB_TEST_WORKLOAD_WRONG_AUDIENCE"])
    b.invalidate()
    with pytest.raises(Unauthorized) as e:
        b.access_token()
    assert "audience" in e.value.message
    token_file.write_text(os.environ["TB_TEST_WORKLOAD_TOKEN"])
    assert b.access_token().startswith("ey")
    assert os.environ["TB_TEST_WORKLOAD_TOKEN"] not in repr(b) + repr(b.__dict__)


def test_a_workload_names_its_grant_and_an_unbound_one_is_refused(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(os.environ["TB_TEST_WORKLOAD_TOKEN"])
    named = TokenBroker(URL, workload_token_file=token_file, grant=os.environ["TB_TEST_GRANT"])
    assert named.access_token().startswith("ey")
    other = TokenBroker(
        URL, workload_token_file=token_file, grant="00000000-0000-4000-8000-000000000000"
    )
    with pytest.raises(BrokerError) as e:
        other.access_token()
    assert e.value.code == "invalid_target"


def test_workload_settings_are_checked(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(os.environ["TB_TEST_WORKLOAD_TOKEN"])
    both = {
        "TOKEN_BROKER_URL": URL,
        "TOKEN_BROKER_TASK_KEY": "tbk_x",
        "TOKEN_BROKER_WORKLOAD_TOKEN_FILE": str(token_file),
    }
    with pytest.raises(ConfigurationError):
        TokenBroker.from_env(both)
    missing = {"TOKEN_BROKER_URL": URL, "TOKEN_BROKER_WORKLOAD_TOKEN_FILE": str(tmp_path / "no")}
    with pytest.raises(ConfigurationError) as e:
        TokenBroker.from_env(missing).access_token()
    assert "cannot read the workload token file" in e.value.message
