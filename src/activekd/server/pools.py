"""Deprecated path (one release): use :mod:`activekd.wire.pool_info`."""

from activekd.wire.pool_info import pool_info

__all__ = ["pool_info"]
