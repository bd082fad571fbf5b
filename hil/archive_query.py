"""Read-only queries of a SQLite file the bench did not write: the ground's archive, the flight store."""
from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path


@contextlib.contextmanager
def read_only(path: Path | str):
    """A connection that cannot change the file (mode=ro), closed on leaving."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield db
    finally:
        db.close()
