#!/usr/bin/env python3
"""Signs one request with oauthlib (an OAuth1 implementation independent of ours).

Used by tests/it/auth.rs. Reads a JSON object on stdin:
  {"method": "GET", "url": "https://host:port/path?query", "headers": {...}, "body": str|null,
   "key": ..., "secret": ..., "token": str|null, "token_secret": str|null,
   "signature_method": "HMAC-SHA1"|"HMAC-SHA256"|"PLAINTEXT",
   "timestamp": "1700000000", "nonce": str|null, "realm": str|null}
and prints {"url": ..., "headers": {...}, "body": ...} as oauthlib signed them.

Needs: pip install oauthlib requests PyJWT cryptography
"""
import json
import sys

try:
    from oauthlib import oauth1
except ImportError as e:  # pragma: no cover - environment problem, reported to the Rust test
    sys.stderr.write(
        f"oauthlib is not importable ({e}); run: pip install oauthlib requests PyJWT cryptography\n"
    )
    sys.exit(3)


def main() -> None:
    req = json.load(sys.stdin)
    client = oauth1.Client(
        req["key"],
        client_secret=req["secret"],
        resource_owner_key=req.get("token"),
        resource_owner_secret=req.get("token_secret"),
        signature_method=req.get("signature_method", "HMAC-SHA1"),
        signature_type=oauth1.SIGNATURE_TYPE_AUTH_HEADER,
        realm=req.get("realm"),
        nonce=req.get("nonce"),
        timestamp=req.get("timestamp"),
    )
    url, headers, body = client.sign(
        req["url"],
        http_method=req["method"],
        body=req.get("body"),
        headers=req.get("headers") or {},
    )
    json.dump({"url": url, "headers": dict(headers), "body": body}, sys.stdout)


if __name__ == "__main__":
    main()
