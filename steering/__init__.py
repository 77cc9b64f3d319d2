"""steering service."""
