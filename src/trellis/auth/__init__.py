"""Users, API keys, JWTs and the guard that protects routes."""
