"""Round state in Redis: selection records (idempotent, never re-picking) and the experiment state machine."""
