#!/usr/bin/env python3
"""Independent SigV4 for the AWS login test: signs an sts:GetCallerIdentity request with
botocore's SigV4Auth and prints the Authorization header.

Reads JSON on stdin: access_key_id, secret_access_key, session_token (or null), region, url,
body, headers (list of [name, value] pairs before signing) and amz_date (YYYYMMDDTHHMMSSZ, the
signing time to use, taken from the gateway's signed request).
"""
import datetime
import json
import sys
from unittest import mock

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def main() -> None:
    args = json.load(sys.stdin)
    when = datetime.datetime.strptime(args["amz_date"], "%Y%m%dT%H%M%SZ")
    creds = Credentials(args["access_key_id"], args["secret_access_key"], args["session_token"])
    req = AWSRequest(method="POST", url=args["url"], data=args["body"].encode())
    for name, value in args["headers"]:
        req.headers[name] = value
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=when):
        botocore.auth.SigV4Auth(creds, "sts", args["region"]).add_auth(req)
    print(req.headers["Authorization"])


if __name__ == "__main__":
    main()
