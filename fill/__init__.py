"""fill service."""
