#!/usr/bin/env python3
"""A small quotad worker in Python: the proof that any language with gRPC can use quotad.

Stubs are generated from ../../proto with grpcio-tools at start-up (into ./gen), so this file is all a
Python user needs besides `pip install -r requirements.txt`.

    python examples/python/worker.py --target 127.0.0.1:50051

Against a quotad with TLS and auth (README, Security): --ca ca.pem (and --cert/--key for mTLS) and/or
--token TOKEN (sent as `authorization: Bearer TOKEN`); --server-name when the certificate's name is not the
target's host.

It runs a few jobs against the embedded default config's resources: acquire a permit, "call" the downstream,
release with the outcome; then it reports a throttle (as if the downstream answered HTTP 429 with
Retry-After: 2) and shows that the whole fleet is paused and the rate lowered. Exits non-zero if quotad does
not behave as documented.
"""

import argparse
import importlib.resources
import os
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "..", "..", "proto")
GEN = os.path.join(HERE, "gen")


def generate_stubs():
    from grpc_tools import protoc

    os.makedirs(GEN, exist_ok=True)
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    code = protoc.main([
        "grpc_tools.protoc", f"-I{PROTO}", f"-I{well_known}", f"--python_out={GEN}", f"--grpc_python_out={GEN}",
        "quotad/v1/quota.proto", "quotad/v1/admin.proto",
    ])
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    sys.path.insert(0, GEN)


def open_channel(grpc, args):
    """A plaintext channel, or TLS (with a client certificate and/or a bearer token) when asked."""
    if not args.ca:
        if args.token:
            sys.exit("--token needs TLS (--ca): a token on a plaintext connection can be read on the wire")
        return grpc.insecure_channel(args.target)
    read = lambda path: open(path, "rb").read() if path else None
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca), private_key=read(args.key), certificate_chain=read(args.cert))
    if args.token:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(args.token))
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.target, creds, options=options)


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:50051", help="quotad address (host:port)")
    parser.add_argument("--jobs", type=int, default=5, help="jobs to run through example.api")
    parser.add_argument("--ca", help="PEM file of the CA that signed quotad's certificate (turns TLS on)")
    parser.add_argument("--cert", help="client certificate PEM (mTLS)")
    parser.add_argument("--key", help="client private key PEM (mTLS)")
    parser.add_argument("--server-name", help="the name quotad's certificate carries, if not the target host")
    parser.add_argument("--token", default=os.environ.get("QUOTAD_TOKEN"), help="bearer token ($QUOTAD_TOKEN)")
    args = parser.parse_args()

    generate_stubs()
    import grpc
    from google.protobuf import duration_pb2
    from quotad.v1 import quota_pb2 as q
    from quotad.v1 import quota_pb2_grpc as qg

    channel = open_channel(grpc, args)
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = qg.QuotaServiceStub(channel)

    # A worker loop: acquire, call the downstream, release with the outcome.
    for job in range(args.jobs):
        request_id = str(uuid.uuid4())  # the same id on a retry never charges twice
        lease = stub.Acquire(q.AcquireRequest(
            resource="example.api", permits=1, request_id=request_id, client_id="python-worker",
            max_wait=duration_pb2.Duration(seconds=2),
        ), timeout=5)
        check(lease.granted and lease.decision == q.DECISION_GRANTED and len(lease.lease_id) == 16,
              f"job {job}: granted lease {lease.lease_id} ({lease.remaining}/{lease.limit} tokens left)")
        retry = stub.Acquire(q.AcquireRequest(resource="example.api", permits=1, request_id=request_id), timeout=5)
        check(retry.replayed and retry.lease_id == lease.lease_id, f"job {job}: a retried request_id replays the grant")
        done = stub.Release(q.ReleaseRequest(lease_id=lease.lease_id, outcome=q.OUTCOME_SUCCESS), timeout=5)
        check(done.released, f"job {job}: released")
    again = stub.Release(q.ReleaseRequest(lease_id=lease.lease_id, outcome=q.OUTCOME_SUCCESS), timeout=5)
    check(not again.released and again.reason == "already_released", "releasing twice is OK and says why")

    # The downstream throttled us: tell quotad, so the whole fleet backs off at once.
    report = stub.ReportThrottle(q.ReportThrottleRequest(
        resource="bedrock.invoke", kind=q.THROTTLE_KIND_THROTTLED, retry_after=duration_pb2.Duration(seconds=2),
        message="HTTP 429 Too Many Requests", client_id="python-worker",
    ), timeout=5)
    check(report.effective_rate_per_second < report.configured_rate_per_second,
          f"rate lowered to {report.effective_rate_per_second:.3f}/s of {report.configured_rate_per_second:.3f}/s")
    check(report.HasField("paused_until"), "grants paused fleet-wide until the downstream's Retry-After")
    denied = stub.Acquire(q.AcquireRequest(resource="bedrock.invoke"), timeout=5)
    check(not denied.granted and denied.decision == q.DECISION_PAUSED and denied.HasField("retry_after"),
          f"acquire answers PAUSED with retry_after {denied.retry_after.seconds}s {denied.retry_after.nanos}ns")
    state = stub.GetCircuitState(q.GetCircuitStateRequest(resource="bedrock.invoke"), timeout=5)
    check(state.state == q.CIRCUIT_STATE_CLOSED and state.breaker_configured and state.failures == 1,
          f"breaker {q.CircuitState.Name(state.state)} with {state.failures} failure of {state.calls} calls")

    try:
        stub.Acquire(q.AcquireRequest(resource=""), timeout=5)
        check(False, "an empty resource is refused")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT and e.details().startswith("resource"),
              f"bad input is INVALID_ARGUMENT naming the field: {e.details()!r}")
    try:
        stub.Acquire(q.AcquireRequest(resource="no.such.resource"), timeout=5)
        check(False, "an unknown resource is refused")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND, f"unknown resource is NOT_FOUND: {e.details()!r}")
    print("python worker: all checks passed")


if __name__ == "__main__":
    main()
