"""Reads user ids (one per line) and prints "user bearer-token" for each, asking the test
provider's /__test/user-token over one connection: bench/million needs thousands of them.

    python3 bench/bearers.py 127.0.0.1:18081 < users
"""
import http.client
import json
import sys

connection = http.client.HTTPConnection(sys.argv[1])
for line in sys.stdin:
    user = line.strip()
    if not user:
        continue
    connection.request("POST", "/__test/user-token", json.dumps({"sub": user}),
                       {"Content-Type": "application/json"})
    answer = connection.getresponse()
    body = json.loads(answer.read())
    if answer.status != 200:
        sys.exit(f"bearers: {user}: {answer.status} {body}")
    print(user, body["accessToken"])
