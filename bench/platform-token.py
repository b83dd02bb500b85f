"""A local workload platform for bench/workload: an ES256 key whose JWKS goes to DIR/jwks.json,
and one Kubernetes-shaped token for SUBJECT, printed.

    python3 bench/platform-token.py DIR ISSUER AUDIENCE SUBJECT
"""

import json
import sys
import time
from pathlib import Path

from authlib.jose import ECKey, jwt

directory, issuer, audience, subject = sys.argv[1:5]
private = ECKey.generate_key("P-256", is_private=True)
public = private.as_dict(is_private=False)
public.update({"alg": "ES256", "use": "sig", "kid": "bench-1"})
Path(directory, "jwks.json").write_text(json.dumps({"keys": [public]}))
now = int(time.time())
namespace, account = subject.split(":")[2:4]
claims = {
    "iss": issuer, "sub": subject, "aud": [audience], "iat": now, "nbf": now, "exp": now + 3600,
    "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": account, "uid": "bench"}},
}
print(jwt.encode({"alg": "ES256", "kid": "bench-1"}, claims, private).decode())
