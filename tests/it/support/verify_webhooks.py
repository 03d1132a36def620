"""Verifies webhook requests with the Standard Webhooks reference library (PyPI's
`standardwebhooks`), independently of the hub's own signing code.

Usage: verify_webhooks.py FILE, where FILE is JSON: {"secret": "whsec_...", "requests":
[{"headers": {...}, "body": "..."}, ...]}. Prints "verified N" and exits 0 when every
request verifies; otherwise names the first that does not and exits 1.
"""

import json
import sys

from standardwebhooks import Webhook

with open(sys.argv[1], encoding="utf-8") as f:
    recorded = json.load(f)
webhook = Webhook(recorded["secret"])
for i, request in enumerate(recorded["requests"]):
    try:
        webhook.verify(request["body"], request["headers"])
    except Exception as e:  # noqa: BLE001: any refusal fails the check
        print(f"request {i} ({request['headers'].get('webhook-id')}) does not verify: {e}")
        sys.exit(1)
print(f"verified {len(recorded['requests'])}")
