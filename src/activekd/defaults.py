"""Defaults every layer shares (the one copy): the strategy of a new experiment.

``DEFAULT_STRATEGY`` is what ``ExperimentSpec``, ``LoopConfig``, the CLI's ``select`` and the demo
use when no strategy is named; it was chosen by the protocol in docs/benchmarks.md ("Label
efficiency II") and must be a registered strategy (tests/selection/test_defaults.py).
"""

from __future__ import annotations

#: the strategy of a new experiment when none is named
DEFAULT_STRATEGY = "pcoreset"

__all__ = ["DEFAULT_STRATEGY"]
