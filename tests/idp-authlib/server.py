"""A second, independent OpenID provider for token-broker's tests, built on Authlib's
authorization server (not on panva's oidc-provider, which the first one uses).

Every grant, PKCE check, nonce check, ID token, RFC 9068 JWT access token, refresh-token
rotation and revocation below is Authlib's own; this file only stores codes and tokens in
memory, signs users in without a password and prints where it listens. It differs from the
Keycloak-shaped provider where real providers differ:

* access tokens are RFC 9068 `at+jwt` with `client_id` and no `azp`;
* subjects are user names, not UUIDs; the issuer has no realm path;
* refresh tokens always rotate, and a used one is dead (`invalid_grant`);
* a request for `offline_access` without `prompt=consent` is refused with
  `invalid_request: consent in prompt`, as OpenID Connect Core 1.0 §11 allows.

Environment: IDP_BROKER_SECRET (the broker client's secret), IDP_REDIRECT_URIS
(comma-separated, for the broker client), IDP_EXIT_ON_STDIN_CLOSE=1.
Once listening it prints one JSON line to stdout: {"issuer": ..., "port": ...}.
Test-only helpers live under /__test.
"""

import json
import os
import secrets
import sys
import threading
import time

os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")  # plain HTTP on 127.0.0.1 only

from authlib.integrations.flask_oauth2 import AuthorizationServer  # noqa: E402
from authlib.jose import JsonWebKey, KeySet  # noqa: E402
from authlib.oauth2.rfc6749 import grants  # noqa: E402
from authlib.oauth2.rfc6749.errors import OAuth2Error  # noqa: E402
from authlib.oauth2.rfc7009 import RevocationEndpoint  # noqa: E402
from authlib.oauth2.rfc7636 import CodeChallenge  # noqa: E402
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator  # noqa: E402
from authlib.oidc.core import UserInfo  # noqa: E402
from authlib.oidc.core.grants import OpenIDCode  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

ACCESS_TOKEN_TTL = 300
KEY = JsonWebKey.generate_key("RSA", 2048, is_private=True, options={"kid": "authlib-1"})
KEYS = KeySet([KEY])

app = Flask(__name__)
server = make_server("127.0.0.1", int(os.environ.get("IDP_PORT", "0")), app, threaded=True)
ISSUER = f"http://127.0.0.1:{server.server_port}"

lock = threading.Lock()
codes = {}  # code -> Code
refresh_tokens = {}  # token string -> Token
nonces = set()
stats = {"refresh": 0, "revoked": 0}


class User:
    def __init__(self, name):
        self.name = name

    def get_user_id(self):
        return self.name


class Client:
    def __init__(self, client_id, secret, redirect_uris, grant_types, auth_methods):
        self.client_id = client_id
        self.secret = secret
        self.redirect_uris = redirect_uris
        self.grant_types = grant_types
        self.auth_methods = auth_methods
        self.id_token_signed_response_alg = "RS256"

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope):
        allowed = {"openid", "offline_access", "profile", "email"}
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret):
        return self.secret is not None and secrets.compare_digest(self.secret, client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return method in self.auth_methods

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type in self.grant_types


CLIENTS = {
    "token-broker": Client(
        "token-broker",
        os.environ.get("IDP_BROKER_SECRET", "broker-secret"),
        [u for u in os.environ.get("IDP_REDIRECT_URIS", "").split(",") if u],
        {"authorization_code", "refresh_token"},
        {"client_secret_basic", "client_secret_post"},
    ),
    # The platform's frontend: its users' access tokens call the broker.
    "frontend": Client("frontend", None, [], {"authorization_code"}, {"none"}),
}


class Code:
    def __init__(self, code, client_id, user, payload):
        self.code = code
        self.client_id = client_id
        self.user = user
        self.redirect_uri = payload.redirect_uri
        self.scope = payload.scope
        self.nonce = payload.data.get("nonce")
        self.code_challenge = payload.data.get("code_challenge")
        self.code_challenge_method = payload.data.get("code_challenge_method")
        self.auth_time = int(time.time())

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return self.nonce

    def get_auth_time(self):
        return self.auth_time

    def get_acr(self):
        return None

    def get_amr(self):
        return None


class Token:
    def __init__(self, client_id, user, scope, value):
        self.client_id = client_id
        self.user = user
        self.scope = scope
        self.value = value
        self.revoked = False

    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return 0

    def is_expired(self):
        return False

    def is_revoked(self):
        return self.revoked

    def get_user(self):
        return self.user

    def get_client(self):
        return CLIENTS[self.client_id]


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def save_authorization_code(self, code, request):
        item = Code(code, request.client.client_id, request.user, request.payload)
        with lock:
            codes[code] = item
            if item.nonce:
                nonces.add(item.nonce)

    def query_authorization_code(self, code, client):
        with lock:
            item = codes.get(code)
        return item if item and item.client_id == client.client_id else None

    def delete_authorization_code(self, authorization_code):
        with lock:
            codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code):
        return authorization_code.user


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        with lock:
            token = refresh_tokens.get(refresh_token)
        if token and not token.revoked:
            stats["refresh"] += 1
            return token
        return None

    def authenticate_user(self, refresh_token):
        return refresh_token.user

    def revoke_old_credential(self, refresh_token):
        refresh_token.revoked = True


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def query_token(self, token_string, token_type_hint):
        with lock:
            return refresh_tokens.get(token_string)

    def revoke_token(self, token, request):
        token.revoked = True
        stats["revoked"] += 1


class OpenIDCodeExtension(OpenIDCode):
    def exists_nonce(self, nonce, request):
        # Showing the page validates the request too: a nonce counts as used once a code
        # was issued for it (save_authorization_code).
        with lock:
            return nonce in nonces

    def get_jwt_config(self, grant):
        return {"key": KEYS, "alg": "RS256", "iss": ISSUER, "exp": 3600}

    def generate_user_info(self, user, scope):
        return UserInfo(sub=user.name, preferred_username=user.name)


class AccessTokens(JWTBearerTokenGenerator):
    def get_jwks(self):
        return KEYS


def save_token(token, request):
    refresh = token.get("refresh_token")
    if refresh:
        with lock:
            refresh_tokens[refresh] = Token(
                request.client.client_id, request.user, token.get("scope"), refresh
            )


authorization = AuthorizationServer(
    app, query_client=CLIENTS.get, save_token=save_token
)
authorization.register_token_generator(
    "default",
    AccessTokens(
        ISSUER,
        refresh_token_generator=lambda **_: secrets.token_urlsafe(32),
        expires_generator=lambda client, grant_type: ACCESS_TOKEN_TTL,
    ),
)
authorization.register_grant(
    AuthorizationCodeGrant, [OpenIDCodeExtension(require_nonce=True), CodeChallenge(required=True)]
)
authorization.register_grant(RefreshTokenGrant)
authorization.register_endpoint(Revocation)


def error(status, code, description):
    return jsonify(error=code, error_description=description), status


def consent_missing():
    """OpenID Connect Core 1.0 §11: offline access needs prompt=consent here."""
    scope = request.values.get("scope", "").split()
    prompt = request.values.get("prompt", "").split()
    return "offline_access" in scope and "consent" not in prompt


@app.get("/.well-known/openid-configuration")
def discovery():
    return jsonify(
        issuer=ISSUER,
        authorization_endpoint=f"{ISSUER}/authorize",
        token_endpoint=f"{ISSUER}/token",
        revocation_endpoint=f"{ISSUER}/revoke",
        jwks_uri=f"{ISSUER}/jwks",
        response_types_supported=["code"],
        subject_types_supported=["public"],
        id_token_signing_alg_values_supported=["RS256"],
        scopes_supported=["openid", "offline_access", "profile", "email"],
        grant_types_supported=["authorization_code", "refresh_token"],
        code_challenge_methods_supported=["S256"],
        token_endpoint_auth_methods_supported=["client_secret_basic", "client_secret_post"],
    )


@app.get("/jwks")
def jwks():
    return jsonify(KEYS.as_dict(is_private=False))


@app.get("/authorize")
def authorize_page():
    if consent_missing():
        return error(400, "invalid_request", "consent in prompt")
    try:
        authorization.get_consent_grant(end_user=None)
    except OAuth2Error as e:
        return error(400, e.error, e.description)
    return (
        "<!doctype html><form method=post><input name=username> "
        "<button name=consent value=yes>Allow offline access</button></form>"
    )


@app.post("/authorize")
def authorize():
    """The person signs in (any name, no password) and consents in one step."""
    if consent_missing():
        return error(400, "invalid_request", "consent in prompt")
    username = request.form.get("username", "")
    user = User(username) if username and request.form.get("consent") == "yes" else None
    return authorization.create_authorization_response(grant_user=user)


@app.post("/token")
def token():
    return authorization.create_token_response()


@app.post("/revoke")
def revoke():
    return authorization.create_endpoint_response(RevocationEndpoint.ENDPOINT_NAME)


@app.get("/__test/user-token")
def user_token():
    """An access token for a user of the frontend, as the frontend's sign-in would get."""
    user = User(request.args["user"])
    generator = authorization._token_generators["default"]
    value = generator.access_token_generator(CLIENTS["frontend"], "authorization_code", user, "openid")
    return jsonify(access_token=value)


@app.post("/__test/end-sessions")
def end_sessions():
    """The provider ends every grant of a user (an administrator's "sign out everywhere")."""
    user = request.args["user"]
    ended = 0
    with lock:
        for token in refresh_tokens.values():
            if token.user.name == user and not token.revoked:
                token.revoked = True
                ended += 1
    return jsonify(ended=ended)


@app.get("/__test/stats")
def test_stats():
    return jsonify(stats)


if __name__ == "__main__":
    print(json.dumps({"issuer": ISSUER, "port": server.server_port}), flush=True)
    if os.environ.get("IDP_EXIT_ON_STDIN_CLOSE") == "1":
        def watch_stdin():
            sys.stdin.read()
            os._exit(0)

        threading.Thread(target=watch_stdin, daemon=True).start()
    server.serve_forever()
