"""Deprecated path (one release): use :mod:`activekd.wire.tensors`."""

from activekd.wire.tensors import *  # noqa: F403
from activekd.wire.tensors import __all__ as __all__
