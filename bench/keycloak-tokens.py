"""What bench/run needs from Keycloak itself (realm sbo, deploy/keycloak/realm-sbo.json), as a
browser would get it: Keycloak's login form over plain HTTP, its (Secure) cookies kept by hand.

    python3 bench/keycloak-tokens.py KEYCLOAK_URL bearer USER
        the user's access token as the frontend holds it (the user is created if missing)
    python3 bench/keycloak-tokens.py KEYCLOAK_URL refresh USER N
        N offline refresh tokens of the broker's client (authorization code + PKCE, as the
        broker does), one per line: the provider-direct baseline
    python3 bench/keycloak-tokens.py KEYCLOAK_URL consent USER N BROKER_URL BEARER
        N consents through the broker: each one's persistentTokenId, one per line
    python3 bench/keycloak-tokens.py KEYCLOAK_URL events on|count
        turn the realm's REFRESH_TOKEN events on; or count them
"""
import base64
import hashlib
import html
import json
import re
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request

REALM = "sbo"
CLIENT, SECRET = "token-broker", "change-me-broker-secret"
BROKER_REDIRECT = "http://localhost:8080/api/auth/manager/offline-callback"
APP_REDIRECT = "http://localhost:3000/cb"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def call(url, data=None, headers=None, method=None, cookies=None):
    """(status, headers, body) of one request; `cookies` (a dict) is sent and updated."""
    headers = dict(headers or {})
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items() if v)
    if isinstance(data, dict):
        data = urllib.parse.urlencode(data).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        response = OPENER.open(request)
    except urllib.error.HTTPError as e:
        response = e
    if cookies is not None:
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            cookies[name] = rest.split(";", 1)[0]
    return response.status, response.headers, response.read().decode()


def admin_token(kc):
    _, _, body = call(f"{kc}/realms/master/protocol/openid-connect/token", {
        "grant_type": "password", "client_id": "admin-cli", "username": "admin", "password": "admin"})
    return json.loads(body)["access_token"]


def admin(kc, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    status, _, text = call(f"{kc}/admin/realms/{REALM}{path}", data, {
        "Authorization": f"Bearer {admin_token(kc)}", "Content-Type": "application/json"}, method)
    if status >= 300 and status != 409:
        sys.exit(f"keycloak-tokens: {method} {path} answered {status}: {text[:200]}")
    return json.loads(text) if text.strip() else None


def ensure_user(kc, user):
    admin(kc, "POST", "/users", {
        "username": user, "enabled": True, "email": f"{user}@example.org", "emailVerified": True,
        "firstName": "Bench", "lastName": "User",
        "credentials": [{"type": "password", "value": user, "temporary": False}]})


def sign_in(kc, url, user):
    """Follows `url` through Keycloak's login form; the URL Keycloak sends the browser to."""
    cookies = {}
    status, headers, page = call(url, cookies=cookies)
    for _ in range(5):
        if status in (302, 303):
            target = urllib.parse.urljoin(kc, headers["Location"])
            if not target.startswith(kc):
                return target
            status, headers, page = call(target, cookies=cookies)
            continue
        action = re.search(r'<form[^>]*action="([^"]+)"', page)
        if not action:
            sys.exit(f"keycloak-tokens: no form on Keycloak's page: {page[:300]}")
        status, headers, page = call(html.unescape(action.group(1)),
                                     {"username": user, "password": user}, cookies=cookies)
    sys.exit("keycloak-tokens: Keycloak's sign-in did not end")


def code_flow(kc, client, redirect, scope, user, secret=None):
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode({
        "client_id": client, "response_type": "code", "redirect_uri": redirect, "scope": scope,
        "state": secrets.token_urlsafe(8), "code_challenge": challenge, "code_challenge_method": "S256"})
    back = sign_in(kc, f"{kc}/realms/{REALM}/protocol/openid-connect/auth?{query}", user)
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(back).query)["code"][0]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
            "code_verifier": verifier, "client_id": client}
    headers = {}
    if secret:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{client}:{secret}".encode()).decode()
    _, _, body = call(f"{kc}/realms/{REALM}/protocol/openid-connect/token", form, headers)
    return json.loads(body)


def consent(kc, user, broker, bearer):
    _, _, body = call(f"{broker}/api/auth/manager/offline-consent", json.dumps({"taskId": "bench"}).encode(),
                      {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"})
    answer = json.loads(body)
    back = sign_in(kc, answer["consentUrl"], user)
    path = back[len("http://localhost:8080"):]
    status, _, text = call(f"{broker}{path}")
    if status != 200:
        sys.exit(f"keycloak-tokens: the broker's callback answered {status}: {text[:200]}")
    return answer["persistentTokenId"]


def main(kc, what, *args):
    kc = kc.rstrip("/")
    if what == "events":
        if args[0] == "on":
            admin(kc, "PUT", "/events/config", {"eventsEnabled": True, "enabledEventTypes": ["REFRESH_TOKEN"]})
        else:
            print(len(admin(kc, "GET", "/events?type=REFRESH_TOKEN&max=100000000")))
        return
    user = args[0]
    if what == "bearer":
        ensure_user(kc, user)
        print(code_flow(kc, "frontend", APP_REDIRECT, "openid", user)["access_token"])
    elif what == "refresh":
        for _ in range(int(args[1])):
            print(code_flow(kc, CLIENT, BROKER_REDIRECT, "openid offline_access", user, SECRET)["refresh_token"])
    elif what == "consent":
        for _ in range(int(args[1])):
            print(consent(kc, user, args[2], args[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
