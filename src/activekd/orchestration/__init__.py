"""Orchestration: code that runs the activekd services and calls them over gRPC.

:mod:`~activekd.orchestration.driver` (the ExperimentService's round coordinator: one step = one
round-state transition, its work done by the teacher, trainer and selection services),
:mod:`~activekd.orchestration.demo` (``activekd demo``),
:mod:`~activekd.orchestration.run_config` and :mod:`~activekd.orchestration.run_experiment`
(``activekd run CONFIG``), :mod:`~activekd.orchestration.builtin_datasets` (the built-in
datasets of ``activekd run``: Fashion-MNIST, whose pools :mod:`~activekd.orchestration.fashion_pools`
uploads for the demo too, and the Fortunes-10 text set) and :mod:`~activekd.orchestration.local_services` (Redis and the
four services as local processes).
Nothing in the core packages imports this package.
"""
