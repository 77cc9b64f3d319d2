"""oca service."""
