"""Helper processes that cannot outlive the process that started them, and stop signals a run can finish on.

A torch ``DataLoader`` worker whose parent is killed (``kill -9``, the OOM killer) notices only when it next looks
up from its work, and then leaves the way a Python process leaves: by joining the thread that feeds its result
pipe. Nobody reads that pipe any more and the worker itself holds its read end, so a result larger than the pipe's
buffer (any decoded photo) blocks that join for ever: a real run left such a worker alive for 22 minutes. So every
loader worker this package starts (:func:`loader_worker_init`) dies with its parent — at once, by the kernel, on
Linux (``PR_SET_PDEATHSIG``); within :data:`PARENT_POLL_S` by a watchdog thread where that is missing — and every
way out of a worker that this module adds leaves with ``os._exit``, which joins nothing. (torch's own look at
the parent may still end a worker's loop first and wait in that join: the kernel's signal, or the watchdog thread,
which runs on while the join waits, ends the process all the same.)

The main process of a run turns SIGINT and SIGTERM into exceptions with :class:`StopSignals`, so a run stopped
either way shuts its workers down itself, keeps what it wrote whole and writes its summary.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

__all__ = [
    "PARENT_POLL_S",
    "StopSignals",
    "Terminated",
    "die_with_parent",
    "loader_worker_init",
    "stop_loader_workers",
]

#: How often a watchdog thread looks whether its process's parent is still there (where ``prctl`` is missing).
PARENT_POLL_S = 0.2
#: ``PR_SET_PDEATHSIG`` of ``<linux/prctl.h>``.
_PR_SET_PDEATHSIG = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C's ``KeyboardInterrupt`` is: a request from outside to stop.

    A subclass of ``KeyboardInterrupt`` so that every clean-up written for Ctrl-C runs for it too, and so that no
    ``except Exception`` (one image's failure) can swallow it.
    """


def _set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent dies; whether the kernel took it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no C library symbols to see, or no prctl among them
        return False
    prctl.argtypes, prctl.restype = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                                     ctypes.c_ulong), ctypes.c_int
    return prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def die_with_parent(parent_pid: int, *, use_prctl: bool = True) -> str:
    """Make this process end, without any clean-up, as soon as ``parent_pid`` (its parent) is gone.

    On Linux the kernel SIGKILLs it the moment the parent dies (``PR_SET_PDEATHSIG``); elsewhere, or with
    ``use_prctl=False``, a daemon thread polls the parent pid every :data:`PARENT_POLL_S` s and calls ``os._exit``
    once it changes (POSIX systems hand an orphan to another parent; Windows does not, and is not covered).
    The parent may have died before this is called (its child then belongs to init already), so that is checked
    right after. Note that Linux's signal follows the parent *thread*: call this in a process started by a thread
    that outlives it (a ``DataLoader``'s workers are started, and shut down, by the thread iterating it).
    Returns ``"prctl"`` or ``"watchdog"``: how.
    """
    if use_prctl and _set_parent_death_signal(signal.SIGKILL):
        if os.getppid() != parent_pid:
            os._exit(1)
        return "prctl"
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent watchdog", daemon=True).start()
    return "watchdog"


def _leave_now(signum, frame) -> None:
    os._exit(0)


def _init_loader_worker(parent_pid: int, worker_id: int) -> None:
    """A loader worker's start: dies with its parent; ignores SIGINT (a terminal's Ctrl-C reaches the whole process
    group, and the main process alone decides how to stop: it shuts its workers down itself); leaves at once on
    SIGTERM (``multiprocessing``'s ``terminate()``, or a service manager stopping every process of the group).

    Leaving is ``os._exit(0)``: no join of the result pipe's feeder thread, and status 0 because torch's SIGCHLD
    handler raises an error in the main process, at whatever line it is on, for a worker killed by a signal or
    exiting non-zero — which would cut short the main process's own orderly stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _leave_now)
    die_with_parent(parent_pid)


def loader_worker_init() -> Callable[[int], None]:
    """The ``worker_init_fn`` for a ``DataLoader`` this process iterates: its workers die with this process and
    follow its stop signals (:func:`_init_loader_worker`). A ``functools.partial`` of module functions, so it
    pickles for the ``spawn`` start method too."""
    return functools.partial(_init_loader_worker, os.getpid())


def stop_loader_workers(iterator) -> None:
    """End the decode workers of a ``DataLoader`` iterator that is abandoned before its end (a stopped run, an
    error): SIGTERM, on which :func:`loader_worker_init`'s workers leave at once with status 0. Without it torch's
    shutdown asks each worker to finish the image it is decoding and joins it (up to 5 s each), so a stop waited
    for decodes whose results nobody reads. An exhausted iterator has shut its workers down already."""
    for worker in getattr(iterator, "_workers", ()):  # torch's multi-process iterator (no public handle)
        if worker.is_alive():
            worker.terminate()


class StopSignals:
    """While a run is on, SIGINT raises ``KeyboardInterrupt`` and SIGTERM :class:`Terminated` in the main thread,
    so the run can stop in order: discard what is half-done, keep what is written, write its summary.

    Within :meth:`held` (and for good after :meth:`finish`) a signal is noted, not raised: a section that must not
    be cut in two (a summary row being spooled, workers being started) ends first, then the exception is raised at
    its end. The first signal is the one that stops the run (:attr:`signal`); later ones are ignored while it
    finishes. One that arrives after :meth:`finish` and stopped nothing is delivered again, to the handlers of
    before, when the context ends: the run is complete and its summary written by then.

    Only the main thread can receive signals: elsewhere, and for a signal whose handler is not Python's default
    (``nohup``, a shell's background job ignoring SIGINT), nothing changes.
    """

    def __init__(self) -> None:
        #: The signal that stopped the run (``None`` while none has).
        self.signal: int | None = None
        self._previous: dict[int, object] = {}
        self._holding = 0
        self._noted: int | None = None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
            if signal.getsignal(signum) is default:
                self._previous[signum] = signal.signal(signum, self._receive)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        noted, self._noted = self._noted, None
        if noted is not None and self.signal is None:
            signal.raise_signal(noted)

    @staticmethod
    def exception_for(signum: int) -> KeyboardInterrupt:
        return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def _receive(self, signum: int, frame) -> None:
        if self.signal is not None:
            return  # already stopping
        if self._holding:
            self._noted = self._noted or signum
            return
        self.signal = signum
        raise self.exception_for(signum)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Run the block whole: a signal received meanwhile is raised at its end. Signals reach the main thread
        only, so in any other thread this holds nothing (and raises nothing)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
        if not self._holding and self._noted is not None and self.signal is None:
            self.signal, self._noted = self._noted, None
            raise self.exception_for(self.signal)

    def finish(self) -> None:
        """From now on the run only finishes (no new work): signals are noted, never raised."""
        self._holding += 1
