"""One run per workdir: a lock file held (fcntl.flock) for the life of the run.

The kernel releases the lock when its holder exits, however it exits (kill -9 included), so a lock
left by a dead run never blocks the next one; the file itself stays, holding the last holder's pid,
host and start time for the message a second run gets. A process holding the lock may enter
`hold` again for the same workdir (`lasar_jax.main` takes it early, `pipeline.run` again).
"""

import contextlib
import datetime
import fcntl
import json
import os
import pathlib
import socket

LOCK_FILE = ".lock"  # in the workdir
_HELD = set()  # resolved workdirs this process holds


class WorkdirBusyError(RuntimeError):
  """Another live run holds the workdir; the message names its pid, host and start time."""


def _holder(lock_file) -> str:
  """'pid N on host H (started T)' from what the holder wrote, or a plain phrase without it."""
  try:
    info = json.loads(pathlib.Path(lock_file.name).read_text())
    return f"pid {info['pid']} on host {info['host']} (started {info['started']})"
  except (OSError, ValueError, KeyError):
    return "another run"


@contextlib.contextmanager
def hold(workdir):
  """Holds WORKDIR/.lock while the block runs (creating WORKDIR if need be); WorkdirBusyError at
  once if another run holds it."""
  workdir = pathlib.Path(workdir).resolve()
  if workdir in _HELD:
    yield
    return
  workdir.mkdir(parents=True, exist_ok=True)
  with open(workdir / LOCK_FILE, "a+") as lock_file:
    try:
      fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirBusyError(f"workdir {workdir} is in use by {_holder(lock_file)}; wait for "
                             "that run to end or use another --workdir") from None
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    lock_file.truncate(0)
    lock_file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "started": started}))
    lock_file.flush()
    _HELD.add(workdir)
    try:
      yield
    finally:
      _HELD.discard(workdir)
      fcntl.flock(lock_file, fcntl.LOCK_UN)
