"""origin service."""
