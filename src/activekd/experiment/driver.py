"""Deprecated path (one release): use :mod:`activekd.orchestration.driver`."""

from activekd.orchestration.driver import Driver, ServiceTargets

__all__ = ["Driver", "ServiceTargets"]
