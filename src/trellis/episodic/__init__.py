"""The episodic log: one row per model call (who, which door, which model, what, how long, how much)."""
