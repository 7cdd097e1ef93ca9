"""Verifies webhook deliveries with the `standardwebhooks` package (PyPI), not Sluice's code.

Run by tests/tests/api_webhooks.rs with the tests' venv. Reads a JSON file:
{"secret": "whsec_...", "deliveries": [{"headers": {...}, "body": "..."}]}
and prints {"verified": [payload or null per delivery], "errors": [text or null]}.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    wh = Webhook(spec["secret"])
    verified, errors = [], []
    for d in spec["deliveries"]:
        try:
            verified.append(wh.verify(d["body"], d["headers"]))
            errors.append(None)
        except WebhookVerificationError as e:
            verified.append(None)
            errors.append(str(e))
    json.dump({"verified": verified, "errors": errors}, sys.stdout)


if __name__ == "__main__":
    main()
