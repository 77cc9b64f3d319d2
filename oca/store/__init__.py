"""The appliance's storage: disks, the SQLite index over them, atomic publish, tier mover."""
from oca.store.errors import (DiskFailed, HashMismatch, IndexUnavailable, KeyConflict, NoSpace,
                              NotFound, SizeMismatch, StoreError, WriteInProgress)
from oca.store.health import DiskHealth
from oca.store.index import DiskState, FileEntry, Index
from oca.store.pending import PendingFile
from oca.store.scan import ScanResult
from oca.store.store import Store

__all__ = ["DiskFailed", "DiskHealth", "DiskState", "FileEntry", "HashMismatch", "Index",
           "IndexUnavailable", "KeyConflict", "NoSpace", "NotFound", "PendingFile", "ScanResult",
           "SizeMismatch", "Store", "StoreError", "WriteInProgress"]
