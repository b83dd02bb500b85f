#!/usr/bin/env python3
"""RFC 8693 token exchange at the broker with authlib, as a task written in Python would do it.

    TOKEN_BROKER_TASK_KEY=tbk_... python3 token_exchange.py http://broker/api/auth/manager/token

Prints the token response as JSON. Used by tests/api/task_keys.rs.
"""
import json
import os
import sys

from authlib.integrations.httpx_client import OAuth2Client

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TASK_KEY = "urn:token-broker:params:oauth:token-type:task-key"


def main() -> None:
    url = sys.argv[1]
    client = OAuth2Client(token_endpoint_auth_method="none")
    token = client.fetch_token(
        url,
        grant_type=TOKEN_EXCHANGE,
        subject_token=os.environ["TOKEN_BROKER_TASK_KEY"],
        subject_token_type=TASK_KEY,
    )
    print(json.dumps(dict(token)))


if __name__ == "__main__":
    main()
