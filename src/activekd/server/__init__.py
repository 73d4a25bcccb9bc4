"""Shared gRPC server bootstrap for every activekd service (the only place besides client.py importing grpc)."""
