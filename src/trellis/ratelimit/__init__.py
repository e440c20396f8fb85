"""Per-principal rate limiting (GCRA), in-process or shared through Redis."""
