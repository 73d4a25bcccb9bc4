"""Active-learning selection: ``select_batch`` and the strategies behind it (no gRPC here).

>>> from activekd.selection import select_batch
>>> res = select_batch("pcoreset", 10, probs=P, labeled=labeled_rows)  # doctest: +SKIP
>>> res.indices, res.scores  # doctest: +SKIP

Modules: ``api`` (``select_batch``), ``result`` (``SelectionResult``, what every layer returns),
``validation`` (request checks on top of the shared ``activekd.arrays`` / ``activekd.devices``
rules), ``strategies`` (registry), ``kcenter`` (the greedy k-center engine with exact pruning),
``badge`` (factorised BADGE), ``threads`` (thread limits for one call); ``_distance`` and
``_int8_screen`` hold the engine's distance kernels and its int8 greedy screen
(``warm_up_kernels`` loads the latter's compiled code ahead of the first wide selection).
"""

from activekd.arrays import PROB_SUM_ATOL
from activekd.selection._int8_screen import warm_up as warm_up_kernels
from activekd.selection.api import BACKENDS, select_batch
from activekd.selection.kcenter import PRUNE_MARGIN, kcenter_greedy
from activekd.selection.result import SelectionResult
from activekd.selection.strategies import (
    STRATEGIES,
    STRATEGY_INFO,
    StrategyInfo,
    available_strategies,
    validate_strategy,
)

__all__ = [
    "BACKENDS",
    "PROB_SUM_ATOL",
    "PRUNE_MARGIN",
    "STRATEGIES",
    "STRATEGY_INFO",
    "SelectionResult",
    "StrategyInfo",
    "available_strategies",
    "kcenter_greedy",
    "select_batch",
    "validate_strategy",
    "warm_up_kernels",
]
