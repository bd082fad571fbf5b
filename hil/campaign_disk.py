"""Fill the disk: the flight store on a small filesystem of its own, which the bench fills and frees.

The store lives on a size-limited tmpfs mounted for the run (root is needed
to mount one; without it the fault is skipped, and the report says why). At
the fault's time a filler file takes every free block, so the flight
program's next write to its store meets ENOSPC as it would on a full card;
`for_s` later the filler is deleted, as an operator freeing space would. At
the end the store is copied out (SQLite's backup API, so the copy is a
consistent database) beside the run's other outputs and the filesystem is
unmounted.
"""
from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

SIZE_MIB = 32          # room for a scenario's store (a 20 s pass writes a few MiB) before the filler comes
CHUNK = 1 << 20


class StoreFilesystem:
    def __init__(self, mount_point: Path):
        self.mount_point = mount_point
        self.mounted = False
        self.filled_octets = 0

    @property
    def store(self) -> Path:
        return self.mount_point / "store.sqlite"

    def mount(self) -> str:
        """Mount the tmpfs; "" when done, else why the fault cannot run here."""
        if os.geteuid() != 0:
            return "fill_disk needs root to mount a size-limited tmpfs for the store; the bench is not root"
        if shutil.which("mount") is None:
            return "fill_disk needs mount(8), which is not on PATH"
        self.mount_point.mkdir(parents=True, exist_ok=True)
        if os.path.ismount(self.mount_point):     # left by a run that was killed
            subprocess.run(["umount", "-l", str(self.mount_point)], capture_output=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m,mode=0700", "kestrel-store",
                               str(self.mount_point)], capture_output=True, text=True)
        if done.returncode != 0:
            return f"fill_disk: mounting a {SIZE_MIB} MiB tmpfs failed: {done.stderr.strip() or done.returncode}"
        self.mounted = True
        return ""

    def fill(self) -> int:
        """Write a filler until the filesystem refuses (ENOSPC); the octets it took."""
        zeros = bytes(CHUNK)
        written = 0
        with open(self.mount_point / "filler", "wb", buffering=0) as f:
            size = CHUNK
            while size:
                try:
                    written += f.write(zeros[:size])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    size //= 2          # the last blocks: smaller writes take what is left
        self.filled_octets = written
        return written

    def free(self) -> None:
        (self.mount_point / "filler").unlink(missing_ok=True)

    def free_octets(self) -> int:
        s = os.statvfs(self.mount_point)
        return s.f_bavail * s.f_frsize

    def unmount(self, copy_to: Path) -> None:
        """Copy the store out (a consistent copy, WAL included) and unmount."""
        if not self.mounted:
            return
        try:
            if self.store.exists():
                source = sqlite3.connect(self.store)
                target = sqlite3.connect(copy_to)
                try:
                    source.backup(target)
                finally:
                    target.close()
                    source.close()
        finally:
            subprocess.run(["umount", "-l", str(self.mount_point)], capture_output=True)
            self.mounted = False
