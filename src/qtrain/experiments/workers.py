"""Worker processes for Table 1's runs: each run trains in one of ``W`` long-lived processes,
and the parent always knows which run each process holds.

* **Ctrl-C / SIGTERM**: the workers ignore SIGINT themselves (the parent starts them with it
  ignored); the parent forwards the signal to every worker as SIGTERM, a run in progress saves
  mid-epoch and stops (:class:`~qtrain.train.stopping.RunStopped`), queued runs are not
  started, and :func:`run_jobs` raises one ``RunStopped`` listing what was saved.
* **A worker that dies** (kill -9, the out-of-memory killer): the parent names its run in one
  line (:class:`WorkerDied`) after the other runs have finished; the dead run's last
  checkpoint is kept, so the same command resumes it.
* **Workers die with their parent**: on Linux each worker asks the kernel for SIGTERM when its
  parent dies (``prctl(PR_SET_PDEATHSIG)``; the run in progress then saves and stops), and
  every worker checks that its parent is still alive before starting a queued run, so no
  orphan starts a run or holds a run folder's lock.
"""
from __future__ import annotations

import collections
import ctypes
import multiprocessing
import os
import re
import signal
import sys
import threading
from multiprocessing.connection import wait
from typing import Callable, Dict, List, Optional, Tuple

from ..train import stopping
from ..train.stopping import RunStopped

PR_SET_PDEATHSIG = 1


class WorkerDied(ChildProcessError):
    """A worker process ended without returning its run's result (killed); one line."""


def die_with_parent(parent: int) -> None:
    """Get SIGTERM when the parent process dies (Linux); exit now if it is already gone."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the per-run check below remains
            pass
    if os.getppid() != parent:
        os._exit(0)


def _worker(conn, parent: int) -> None:  # pragma: no cover - runs in the child process
    die_with_parent(parent)
    stopping.worker_signals()
    try:  # progress bars' default lock is a multiprocessing semaphore, which a killed worker would leak
        from tqdm import tqdm
        tqdm.set_lock(threading.RLock())
    except ImportError:
        pass
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        key, fn, args = job
        if os.getppid() != parent or stopping.pending is not None:  # parent gone or stopping: start nothing
            reply = (key, "skipped", None)
        else:
            try:
                reply = (key, "ok", fn(*args))
            except RunStopped as e:
                reply = (key, "stopped", str(e))
            except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
                reply = (key, "error", e)
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return
        except Exception as e:  # noqa: BLE001 - an exception that cannot be pickled
            conn.send((key, "error", RuntimeError(f"{type(reply[2]).__name__}: {reply[2]}"[:300])))
            del e


def _how(code: Optional[int]) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name} (e.g. by the out-of-memory killer)"
        except ValueError:
            pass
    return f"exited with code {code}"


class _Forward:
    """SIGINT/SIGTERM in the parent: remember it and forward SIGTERM to the workers (a second
    Ctrl-C raises ``KeyboardInterrupt``)."""

    def __init__(self, procs: list):
        self.procs, self.signum, self.old = procs, None, {}

    def __call__(self, signum, frame):  # noqa: ARG002
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        for p in self.procs:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except (ProcessLookupError, TypeError):
                pass

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self)
        return self

    def __exit__(self, *exc):
        for sig, old in self.old.items():
            signal.signal(sig, old)


def _start(ctx, n: int) -> List[Tuple[object, object]]:
    """``n`` worker processes, started with SIGINT ignored (inherited through exec)."""
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        out = []
        for _ in range(n):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(theirs, os.getpid()), daemon=True)
            p.start()
            theirs.close()
            out.append((p, mine))
        return out
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


def run_jobs(jobs: List[Tuple[object, Callable, tuple, str]], workers: int,
             on_result: Callable[[object, object], None], resume_hint: str) -> Dict[object, object]:
    """Run ``jobs`` (key, function, args, description) in ``workers`` processes; ``on_result(key,
    result)`` as each finishes. Raises :class:`RunStopped` after a signal (every run saved or not
    started) and :class:`WorkerDied` naming the run of a worker that died (after the others)."""
    ctx = multiprocessing.get_context("spawn")
    queue = collections.deque(jobs)
    desc = {key: d for key, _, _, d in jobs}
    results: Dict[object, object] = {}
    stopped: List[str] = []
    died: List[str] = []
    errors: List[BaseException] = []
    skipped = [0]
    pool = _start(ctx, min(workers, len(jobs)))
    procs = [p for p, _ in pool]
    busy: Dict[object, Optional[object]] = {}  # conn -> key of the run it holds
    forward = _Forward(procs)

    def feed(conn) -> None:
        if queue and forward.signum is None and not errors:
            key, fn, args, _ = queue.popleft()
            busy[conn] = key
            conn.send((key, fn, args))
        else:
            busy[conn] = None
            try:
                conn.send(None)
            except OSError:
                pass

    try:
        with forward:
            for _, conn in pool:
                feed(conn)
            live = {conn: p for p, conn in pool}
            while any(k is not None for k in busy.values()):
                by_sentinel = {p.sentinel: conn for conn, p in live.items()}
                for ready in wait(list(live) + list(by_sentinel), timeout=1.0):
                    conn = by_sentinel.get(ready, ready)
                    if conn not in live:
                        continue
                    try:
                        key, status, value = conn.recv() if conn.poll() else (None, "dead", None)
                    except (EOFError, OSError):
                        key, status, value = None, "dead", None
                    if status == "dead":
                        p = live.pop(conn)
                        p.join(5)
                        lost = busy.pop(conn, None)
                        if lost is not None:
                            how = _how(p.exitcode)
                            died.append(f"{how} while training {desc[lost]}")
                        continue
                    if status == "ok":
                        results[key] = value
                        on_result(key, value)
                    elif status == "stopped":
                        stopped.append(f"{desc[key]} " + re.sub(r"^stopped by [^:]*: saved \S+ ", "saved ",
                                                                 value.split("; resume with:")[0]))
                    elif status == "error":
                        errors.append(value)
                    else:
                        skipped[0] += 1
                    feed(conn)
    finally:
        for p in procs:
            if p.is_alive():
                p.join(1)
            if p.is_alive():
                p.terminate()
                p.join(5)
    if errors:
        raise errors[0]
    not_started = len(queue) + skipped[0]
    if forward.signum is not None or stopped:
        signum = forward.signum or signal.SIGTERM
        name = signal.Signals(signum).name
        saved = "; ".join(stopped) if stopped else "no run was in progress"
        raise RunStopped(f"stopped by {name}: {saved}" + (f"; {not_started} run(s) not started" if not_started else "")
                         + f"; resume with: {resume_hint}", signum)
    if died:
        raise WorkerDied(f"a worker process {died[0]}"
                         + (f" (and {len(died) - 1} more)" if len(died) > 1 else "")
                         + ("; the other runs finished" if not queue else f"; {len(queue)} run(s) were not started")
                         + f"; its last checkpoint is kept; resume with: {resume_hint}")
    return results


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers(threads: Optional[int]) -> int:
    """One worker per ``threads`` cores: one per core at the CPU scales (1 thread per run), a single
    worker where runs use torch's default thread count (all cores; the paper scale)."""
    return max(1, cores() // threads) if threads else 1
