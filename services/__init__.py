"""Thin gRPC adapters over the activekd library, installed as ``activekd_services``."""
