"""Generated from proto/quotad/v1 by grpcio-tools (python/stubs.py); do not edit. ``quota_pb2`` and
``admin_pb2`` hold the messages; ``*_pb2_grpc`` the raw stubs (they need grpcio >= 1.75.1)."""
