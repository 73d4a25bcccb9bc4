"""Thin gRPC adapters over the activekd library, installed as ``activekd_services``."""

import activekd  # noqa: F401  (installs the hook that names the missing extra on import errors)
