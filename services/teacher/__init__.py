"""TeacherService: zero-shot teacher predictions, per-experiment classes, pool scoring."""
