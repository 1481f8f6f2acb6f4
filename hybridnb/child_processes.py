"""Worker processes that end with the process that started them.

Notebook 07 trains image-text runs in a pool of spawned worker processes (:mod:`hybridnb.image_text.runs`).
When their parent dies without shutting the pool down (papermill or the kernel killed with ``-9``, the OOM
killer), nothing tells them: each went on training its run for minutes, then waited for more work forever,
holding its memory and cores beside the next attempt. :func:`end_with_parent`, called first thing in a worker,
ties the worker's life to its parent's: on Linux the kernel sends the worker SIGKILL when the parent dies
(``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon thread also checks the parent's pid every ``poll_s`` seconds
(the watch that works without prctl, and that catches a parent which died before the prctl was set). The
kernel's signal follows the parent *thread* that started the worker: a pool started in a thread that ends
before the pool is shut down would lose its workers with that thread (:mod:`concurrent.futures` starts spawned
workers in the thread that submits, and notebook 07 submits from the kernel's main thread).

What a killed worker leaves is what any kill leaves: temp files of unfinished atomic writes, removed by the run's
next start (:func:`hybridnb.training.run_folder.remove_stale_temps`), never a half-written result.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

__all__ = ["end_with_parent"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def end_with_parent(poll_s: float = 0.5) -> None:
    """Make this process end (SIGKILL, or ``os._exit``) as soon as its parent process is gone."""
    parent = _parent_pid()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl here: the watch below does it
            pass
    if os.getppid() != parent:  # the parent died before the prctl: nothing would signal us
        os._exit(1)

    def watch():
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:  # re-parented to init or a subreaper: ours is gone
                os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def _parent_pid() -> int:
    """The pid of the process that started this one: multiprocessing's record in a spawned worker (exact even if
    the parent has already died), else the current parent."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid else os.getppid()
