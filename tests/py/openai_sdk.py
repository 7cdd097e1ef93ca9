"""The official `openai` Python SDK against sluice-api's OpenAI-compatible endpoint.

Run by tests/tests/api_openai.rs with the tests' venv (tests/run.sh installs `openai`). Prints one
JSON object; any SDK error (a 429 included: max_retries=0, so the SDK would surface it) fails.

  openai_sdk.py gone  --base URL --key KEY   a call that gives up (timeout) before its job ran
  openai_sdk.py calls --base URL --key KEY --n N   N concurrent calls, the given-up one again,
                                                   and one with Prefer: respond-async and
                                                   Sluice-Priority: high
"""

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor

import openai
from openai.types.chat import ChatCompletion


def client(args, timeout=60.0):
    return openai.OpenAI(base_url=args.base + "/v1", api_key=args.key, max_retries=0, timeout=timeout)


def ask(c, text, key):
    return c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": text}],
        extra_headers={"Idempotency-Key": key},
    )


def gone(args):
    try:
        ask(client(args, timeout=1.0), "given up on", "gone-1")
    except openai.APITimeoutError:
        return {"timed_out": True}
    return {"timed_out": False}


def calls(args):
    c = client(args, timeout=120.0)

    def one(i):
        raw = ask(c, f"question {i}", f"q-{i}")
        completion = raw.parse()
        assert isinstance(completion, ChatCompletion), type(completion)
        assert isinstance(completion.choices[0].message.content, str)
        return {
            "status": raw.http_response.status_code,
            "job": raw.headers.get("sluice-job-id"),
            "content": completion.choices[0].message.content,
            "tokens": completion.usage.total_tokens if completion.usage else None,
        }

    with ThreadPoolExecutor(max_workers=args.n) as pool:
        answers = list(pool.map(one, range(args.n)))
    again = ask(c, "given up on", "gone-1")
    again_completion = again.parse()
    assert isinstance(again_completion, ChatCompletion)
    later = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "later"}],
        extra_headers={"Prefer": "respond-async", "Idempotency-Key": "async-1", "Sluice-Priority": "high"},
    )
    return {
        "answers": answers,
        "gone_again": {"status": again.http_response.status_code, "job": again.headers.get("sluice-job-id")},
        "async": {
            "status": later.http_response.status_code,
            "job": later.headers.get("sluice-job-id"),
            "location": later.headers.get("location"),
            "body": json.loads(later.http_response.text),
        },
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["gone", "calls"])
    p.add_argument("--base", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--n", type=int, default=20)
    args = p.parse_args()
    out = gone(args) if args.mode == "gone" else calls(args)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
