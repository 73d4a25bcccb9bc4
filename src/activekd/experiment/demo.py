"""Deprecated path (one release): use :mod:`activekd.orchestration.demo`."""

from activekd.orchestration.demo import DemoConfig, demo_main, find_cache, run_demo

__all__ = ["DemoConfig", "demo_main", "find_cache", "run_demo"]
