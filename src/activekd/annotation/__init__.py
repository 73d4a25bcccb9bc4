"""Annotators in the loop: a Label Studio ML backend over the experiment service.

- :mod:`.classes`: the labeling config's choices <-> the experiment's classes;
- :mod:`.lifecycle`: annotations -> one label per item (the documented rules);
- :mod:`.ledger`: what Label Studio told us, in Redis (idempotent by annotation id);
- :mod:`.tasks`: a round's picks as Label Studio tasks (rank, round, image);
- :mod:`.sync`: the worker that submits labels, advances rounds and imports the next picks;
- :mod:`.backend`: the HTTP ML backend (``/health``, ``/setup``, ``/predict``, ``/webhook``).

See docs/annotation.md.
"""
