#!/usr/bin/env python3
"""A Bedrock agent's model calls under quotad, with the `quotad` package (pip install ./python).

The setup of the Bedrock agent team in ../../shared/background: 30 model invocations a minute for the whole
fleet, at most 20 in flight, an adaptive rate that halves when Bedrock throttles, and Bedrock's 429 with
Retry-After honoured by every worker at once. Against examples/bedrock.toml (or the embedded default config):

    cargo run --release -p quotad-server -- --config examples/bedrock.toml
    python examples/python/bedrock_agent.py --target 127.0.0.1:50051

The "Bedrock" here is a stand-in that throttles the 4th call the way botocore reports it (a ClientError with
ThrottlingException and a retry-after header), so the run shows what the package does with no configuration:
the throttle is reported (the fleet pauses, the adaptive rate drops), the call is retried after the
Retry-After, and every lease is released. Exits non-zero if quotad does not behave as documented.
"""

import argparse
import logging
import sys
import threading
import time

import quotad


class ClientError(Exception):
    """botocore.exceptions.ClientError's shape (the package duck-types it: no boto3 needed here)."""

    def __init__(self, code: str, retry_after: str) -> None:
        super().__init__(f"An error occurred ({code}) when calling the InvokeModel operation: Rate exceeded")
        self.response = {
            "Error": {"Code": code, "Message": "Rate exceeded"},
            "ResponseMetadata": {"HTTPStatusCode": 400, "HTTPHeaders": {"retry-after": retry_after}},
        }


class FakeBedrock:
    def __init__(self, throttle_call: int) -> None:
        self.calls = 0
        self.throttle_call = throttle_call
        self.lock = threading.Lock()

    def invoke_model(self, prompt: str) -> str:
        with self.lock:
            self.calls += 1
            n = self.calls
        if n == self.throttle_call:
            raise ClientError("ThrottlingException", retry_after="1")
        time.sleep(0.05)
        return f"answer to {prompt!r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--calls", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    bedrock = FakeBedrock(throttle_call=4)
    client = quotad.Client(args.target, client_id="bedrock-agent", on_progress=lambda p: print(f"  {p}"))

    @client.limited("bedrock.invoke")
    def ask(prompt: str) -> str:
        return bedrock.invoke_model(prompt)

    started = time.monotonic()
    for i in range(args.calls):
        print(f"call {i + 1}: {ask(f'question {i + 1}')}")
    took = time.monotonic() - started

    state = client.circuit_state("bedrock.invoke")
    print(f"bedrock.invoke: breaker {state.state.name}, {state.failures}/{state.calls} failed, "
          f"rate {state.effective_rate_per_second:.3f}/s of {state.configured_rate_per_second:.3f}/s")
    ok = (
        bedrock.calls == args.calls + 1  # one throttled call, retried once
        and state.failures >= 1  # the throttle reached the shared breaker
        and state.effective_rate_per_second < state.configured_rate_per_second  # and lowered the fleet's rate
        and took >= 1.0  # the Retry-After was waited out
    )
    client.close()
    if not ok:
        print(f"unexpected: {bedrock.calls} downstream calls in {took:.1f} s", file=sys.stderr)
        return 1
    print(f"done: {args.calls} answers, {bedrock.calls} downstream calls, {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
