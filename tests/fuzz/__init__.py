"""Property-based fuzzing of the four services (issue #13, "Bad input")."""
