"""The model gateway: one API over local and remote models, resilient, cached and logged."""
