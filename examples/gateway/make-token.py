#!/usr/bin/env python3
"""Makes test JWTs for the gateway example (Python's standard library; the openssl command
for RS256). Prints the token.

    ./make-token.py                              # HS256, sub=alice, valid for 5 minutes
    ./make-token.py --alg RS256 --sub bob        # RS256 with the demo key, kid demo-rs256-1
    ./make-token.py --exp-in -60                 # expired a minute ago
    ./make-token.py --alg none                   # unsigned: the gateway must refuse it
    ./make-token.py --secret wrong-secret-wrong-secret-wrong-secret   # a wrong key

The HS256 secret is $SKIFF_VAR_JWT_HS256_SECRET, else the demo secret that ./run.sh uses.
The RS256 key is demo-keys/rs256-private.pem: DEMO ONLY, it is public in this repository.
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO_SECRET = "demo-only-hs256-secret-do-not-use-in-production"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alg", default="HS256", choices=["HS256", "RS256", "none"])
    parser.add_argument("--sub", default="alice")
    parser.add_argument("--aud", default="demo-api")
    parser.add_argument("--iss", default="demo-issuer")
    parser.add_argument("--exp-in", type=int, default=300, help="seconds from now to exp (negative: expired)")
    parser.add_argument("--nbf-in", type=int, default=None, help="seconds from now to nbf")
    parser.add_argument("--kid", default="demo-rs256-1")
    parser.add_argument("--secret", default=os.environ.get("SKIFF_VAR_JWT_HS256_SECRET", DEMO_SECRET))
    parser.add_argument("--key", default=os.path.join(HERE, "demo-keys", "rs256-private.pem"))
    args = parser.parse_args()

    now = int(time.time())
    header = {"alg": args.alg, "typ": "JWT"}
    if args.alg == "RS256":
        header["kid"] = args.kid
    claims = {"sub": args.sub, "aud": args.aud, "iss": args.iss, "iat": now, "exp": now + args.exp_in}
    if args.nbf_in is not None:
        claims["nbf"] = now + args.nbf_in
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64url(json.dumps(claims, separators=(",", ":")).encode()))

    if args.alg == "HS256":
        import hashlib
        import hmac
        signature = hmac.new(args.secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    elif args.alg == "RS256":
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", args.key],
                                   input=signing_input.encode(), capture_output=True, check=True).stdout
    else:
        signature = b""
    print(signing_input + "." + b64url(signature))
    return 0


if __name__ == "__main__":
    sys.exit(main())
