"""Deprecated path (one release): use :mod:`activekd.state.experiment_spec`."""

from activekd.state.experiment_spec import (
    MAX_CLASSES,
    MAX_SEED,
    ExperimentSpec,
    validate_labeled_items,
)

__all__ = ["MAX_CLASSES", "MAX_SEED", "ExperimentSpec", "validate_labeled_items"]
