#!/usr/bin/env python3
"""Verifies one webhook delivery with the `standardwebhooks` package (PyPI),
an implementation of Standard Webhooks independent of webhookd.

Usage: verify_standardwebhooks.py FILE

FILE is JSON: {"secret": "...", "headers": {"webhook-id": ..., ...},
"body_b64": "<base64 of the body bytes>", "raw_secret": false}. With
`raw_secret` true the secret's UTF-8 bytes are the HMAC key (webhookd's rule
for secrets without the `whsec_` prefix); otherwise the secret goes to
`Webhook(secret)` as a Standard Webhooks `whsec_<base64>` secret.

Exits 0 when the signature verifies, 1 with a message when it does not, and
2 when the package is missing or the file cannot be read.
"""

import base64
import json
import sys

INSTALL = "python3 -m pip install standardwebhooks"


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} FILE", file=sys.stderr)
        return 2
    try:
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError
    except ImportError as e:
        print(f"the standardwebhooks package is missing ({e}); install it with: {INSTALL}",
              file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1], encoding="utf-8") as f:
            case = json.load(f)
        body = base64.b64decode(case["body_b64"], validate=True)
        headers = {str(k): str(v) for k, v in case["headers"].items()}
        secret = case["secret"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"cannot read {sys.argv[1]}: {e}", file=sys.stderr)
        return 2
    if case.get("raw_secret"):
        secret = secret.encode("utf-8")
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError as e:
        print(f"verification failed: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a malformed header or body is a failure too
        print(f"verification failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
