"""Shared contracts between the daemons: ids, the URL token format, key files, typed TOML config.

Nothing in here does network or disk I/O beyond reading a named file on request; every service
may import it, it imports no service.
"""
