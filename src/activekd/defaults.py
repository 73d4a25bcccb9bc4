"""Defaults every layer shares (the one copy): the strategy of a new experiment.

``DEFAULT_STRATEGY`` is what ``ExperimentSpec``, ``LoopConfig``, the CLI's ``select`` and the demo
use when no strategy is named. ``typiclust`` on the teacher's features was chosen by the rule fixed
before the screening in docs/benchmarks.md ("Label efficiency II": the highest worst-case gain over
random across Fashion-MNIST and Fortunes-10) and confirmed there on fresh seeds; it needs the
teacher's ``features`` of the pool. It must be a registered strategy
(tests/selection/test_defaults.py).
"""

from __future__ import annotations

#: the strategy of a new experiment when none is named
DEFAULT_STRATEGY = "typiclust"

__all__ = ["DEFAULT_STRATEGY"]
