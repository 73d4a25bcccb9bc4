"""Active-learning selection: ``select_batch`` and the strategies behind it (no gRPC here).

>>> from activekd.selection import select_batch
>>> res = select_batch("pcoreset", 10, probs=P, labeled=labeled_rows)  # doctest: +SKIP
>>> res.indices, res.scores  # doctest: +SKIP

Modules: ``validation`` (input checks shared with the gRPC service), ``kcenter`` (the greedy
k-center engine with exact pruning), ``strategies`` (registry), ``badge`` (factorised BADGE).
"""

from activekd.selection.api import BACKENDS, SelectionResult, select_batch, validate_strategy
from activekd.selection.kcenter import PRUNE_MARGIN, KCenterResult, kcenter_greedy
from activekd.selection.strategies import (
    STRATEGIES,
    STRATEGY_INFO,
    StrategyInfo,
    available_strategies,
)
from activekd.selection.validation import PROB_SUM_ATOL

__all__ = [
    "BACKENDS",
    "PROB_SUM_ATOL",
    "PRUNE_MARGIN",
    "STRATEGIES",
    "STRATEGY_INFO",
    "KCenterResult",
    "SelectionResult",
    "StrategyInfo",
    "available_strategies",
    "kcenter_greedy",
    "select_batch",
    "validate_strategy",
]
