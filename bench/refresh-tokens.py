"""Prints N offline refresh tokens of the broker's client, obtained straight from the provider
(authorization code + PKCE, as the broker does), one per line: bench/run loads the provider's
token endpoint with them directly, as the baseline for the broker's refresh path.

    python3 bench/refresh-tokens.py ISSUER N
"""
import base64
import hashlib
import http.cookiejar
import json
import re
import secrets
import sys
import urllib.parse
import urllib.request

CLIENT, SECRET = "token-broker", "broker-secret"
REDIRECT = "http://broker.test/api/auth/manager/offline-callback"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def location(opener, url, data=None):
    try:
        opener.open(url, data=data)
    except urllib.error.HTTPError as e:
        if e.code in (302, 303):
            return urllib.parse.urljoin(url, e.headers["Location"])
        raise
    raise RuntimeError(f"{url}: no redirect")


def refresh_token(issuer, discovery):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(jar))
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode({
        "client_id": CLIENT, "response_type": "code", "redirect_uri": REDIRECT,
        "scope": "openid offline_access", "state": secrets.token_urlsafe(16),
        "nonce": secrets.token_urlsafe(16), "code_challenge": challenge,
        "code_challenge_method": "S256", "prompt": "consent",
    })
    login = location(opener, f"{discovery['authorization_endpoint']}?{query}")
    page = opener.open(login).read().decode()
    action = urllib.parse.urljoin(login, re.search(r'action="([^"]*)"', page).group(1))
    form = urllib.parse.urlencode({"username": "bench-user", "password": "password",
                                   "grant_offline": "yes"}).encode()
    resume = location(opener, action, form)
    back = location(opener, resume)
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(back).query)["code"][0]
    body = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": REDIRECT, "code_verifier": verifier}).encode()
    request = urllib.request.Request(discovery["token_endpoint"], data=body)
    basic = base64.b64encode(f"{CLIENT}:{SECRET}".encode()).decode()
    request.add_header("Authorization", f"Basic {basic}")
    return json.load(urllib.request.urlopen(request))["refresh_token"]


def main():
    issuer, count = sys.argv[1], int(sys.argv[2])
    discovery = json.load(urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration"))
    for _ in range(count):
        print(refresh_token(issuer, discovery))


main()
