"""Claiming a run folder: made exclusively, locked for the run's life, refused to a second run.

A run folder is chosen and created in one step (``mkdir`` fails when the name exists, so two runs in the
same second get ``-2``, ``-3`` ... instead of sharing one), and a lock file inside it is held with
``flock`` until the run ends; a second run or ``--resume`` of a folder whose lock is held is refused with
the holder's pid, host and start time. The kernel drops the lock when its process dies, so a run killed
with SIGKILL can still be resumed.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from helpers.core.errors import WorkbookError

LOCK_NAME = ".run.lock"


@dataclass
class Claim:
    """A run folder held by this process; ``release`` (or process exit) gives it up."""
    run_dir: Path
    fd: int
    created: bool

    def release(self) -> None:
        if self.fd >= 0:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = -1

    def abandon(self) -> None:
        """Give the folder up and remove it when this process made it and nothing else is in it."""
        self.release()
        if self.created:
            (self.run_dir / LOCK_NAME).unlink(missing_ok=True)
            try:
                self.run_dir.rmdir()
            except OSError:
                pass


def _holder_text(fd: int) -> str:
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        info = json.loads(raw)
        return f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"
    except (OSError, ValueError, AttributeError):
        return "another run (its lock file names no holder)"


def held_by(run_dir: Path) -> str | None:
    """Who holds the folder's lock now (pid, host, start), or None when no live process does."""
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _holder_text(fd)
    finally:
        os.close(fd)


def _take_lock(run_dir: Path, create_exclusive: bool) -> int:
    """Open and ``flock`` the folder's lock file (never through a link); raise naming the holder if held."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | (os.O_EXCL if create_exclusive else 0)
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        time.sleep(0.2)   # the other run writes who it is right after creating the file
        raise WorkbookError(f"{run_dir} is being written by {held_by(run_dir) or 'another run'}: one run per "
                            "folder; choose another --out, or wait for that run to end") from None
    except OSError as e:
        raise WorkbookError(f"cannot lock the run folder {run_dir}: {e.strerror or e}"
                            + (" (its lock file is a link)" if e.errno == errno.ELOOP else "")) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder_text(fd)
        os.close(fd)
        raise WorkbookError(f"{run_dir} is in use by {holder}: one run per folder at a time; wait for it to "
                            "end (or stop it) before resuming") from None
    me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                     "started": datetime.now().isoformat(timespec="seconds")}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, me, 0)
    return fd


def claim_new(run_dir: Path, exact: bool) -> Claim:
    """Create ``run_dir`` (or, unless ``exact``, ``run_dir-2``, ``-3``, ... when the name is taken) and lock it.

    ``exact`` (``--out``): the folder may exist only empty; a second run into it is refused."""
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WorkbookError(f"cannot write the run folder {run_dir}: {e.strerror or e} (choose a folder you can "
                            "write to with --out)") from None
    candidate, k = run_dir, 2
    while True:
        try:
            candidate.mkdir()
            created = True
        except OSError as e:
            if not isinstance(e, FileExistsError):
                raise WorkbookError(f"cannot write the run folder {candidate}: {e.strerror or e} (choose a folder "
                                    "you can write to with --out)") from None
            if not exact:
                candidate, k = run_dir.with_name(f"{run_dir.name}-{k}"), k + 1
                continue
            if candidate.is_symlink() or not candidate.is_dir():
                raise WorkbookError(f"--out {candidate}: exists and is not a folder (or is a link); a run writes "
                                    "only into a new folder of its own") from None
            created = False
        if not created and os.listdir(candidate):
            holder = held_by(candidate)
            raise WorkbookError(f"--out {candidate}: " + (f"in use by {holder}; one run per folder" if holder else
                                "already exists and is not an empty folder; a run writes only into a new folder, "
                                "so earlier results and your own files are never overwritten: choose a new folder, "
                                "or continue that run with --resume"))
        fd = _take_lock(candidate, create_exclusive=True)
        return Claim(candidate, fd, created)


def claim_existing(run_dir: Path) -> Claim:
    """Lock an earlier run's folder for ``--resume``: refused while another process holds it, or when the
    folder holds a link or anything but plain files and folders (a run never writes through a link)."""
    if run_dir.is_symlink():
        raise WorkbookError(f"--resume {run_dir}: a symbolic link (to {run_dir.resolve()}); give the run folder itself")
    if not run_dir.is_dir():
        raise WorkbookError(f"--resume {run_dir}: not a folder")
    if (run_dir / "run.json").is_symlink() or not (run_dir / "run.json").is_file():  # checked before any walk or lock
        raise WorkbookError(f"--resume {run_dir}: not a run folder (no run.json)")
    refuse_links(run_dir)
    return Claim(run_dir, _take_lock(run_dir, create_exclusive=False), False)


def refuse_links(run_dir: Path) -> None:
    for root, dirs, files in os.walk(run_dir):
        for name in dirs + files:
            p = Path(root) / name
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode):
                raise WorkbookError(f"--resume {run_dir}: {p} is a symbolic link; a run folder holds only its own "
                                    "files, and a resumed run never writes through a link: remove the link first")
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise WorkbookError(f"--resume {run_dir}: {p} is not a plain file or folder")
