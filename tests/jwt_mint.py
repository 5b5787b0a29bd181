#!/usr/bin/env python3
"""Mints one JWT with PyJWT (a JWT implementation independent of ours).

Used by tests/it/auth.rs. Reads a JSON object on stdin:
  {"claims": {...}, "alg": "HS256"|"RS256"|"ES256"|"none", "key": str|null (secret or PEM
   private key), "headers": {...}|null}
and prints the token. With "jwk_from_pem": "<public PEM>" instead, prints that public key as a
JWK (JSON) for the given "alg".

Needs: pip install oauthlib requests PyJWT cryptography
"""
import json
import sys
import warnings

try:
    import jwt
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm
    import cryptography  # noqa: F401  (RS256/ES256 need it)
except ImportError as e:  # pragma: no cover - environment problem, reported to the Rust test
    sys.stderr.write(
        f"PyJWT/cryptography not importable ({e}); run: pip install oauthlib requests PyJWT cryptography\n"
    )
    sys.exit(3)


def main() -> None:
    req = json.load(sys.stdin)
    if "jwk_from_pem" in req:
        algo = RSAAlgorithm if req["alg"].startswith("RS") else ECAlgorithm
        key = algo(algo.SHA256).prepare_key(req["jwk_from_pem"])
        sys.stdout.write(algo.to_jwk(key))
        return
    alg = req["alg"]
    key = req.get("key")
    if alg == "none":
        key = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns about short HMAC keys in negative tests
        token = jwt.encode(req["claims"], key, algorithm=alg, headers=req.get("headers"))
    sys.stdout.write(token)


if __name__ == "__main__":
    main()
