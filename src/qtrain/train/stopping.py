"""When a run saves mid-epoch, and how it stops on SIGINT / SIGTERM.

A :class:`Stopper` is asked after every optimizer step whether to save now: when
``checkpoint_minutes`` have passed since the last save (0: never mid-epoch) or when a
SIGINT/SIGTERM arrived. Under torchrun the ranks compare notes every ``SYNC_EVERY`` steps
(a logical OR over the ranks), so all ranks save (rank 0 writes) and stop at the same step. After saving on a signal
the loop raises :class:`RunStopped`, whose one-line message says what was saved and the
exact command that resumes it (the CLI exits 130 for SIGINT, 143 for SIGTERM). A second
Ctrl-C while saving raises ``KeyboardInterrupt`` at once (under torchrun, not within
``RELAY_SECONDS`` of the first: the launcher relays the terminal's Ctrl-C to every rank, which
the terminal has already signalled).

>>> s = Stopper(minutes=0, d=None)
>>> s.check()
(False, False)
"""
from __future__ import annotations

import shlex
import signal
import threading
import time
from pathlib import Path
from typing import Optional, Tuple

from . import distributed


SYNC_EVERY = 10  # steps between the ranks' agreement on saving/stopping under torchrun
RELAY_SECONDS = 2.0  # under torchrun a second SIGINT this soon is the launcher relaying the same Ctrl-C


class RunStopped(Exception):
    """The run was stopped by a signal after saving; ``exit_code`` is 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum

    def __reduce__(self):  # crosses process boundaries (table1's worker processes) intact
        return type(self), (str(self), self.signum)


# The signals a Stopper turns into "save, then stop". Worker processes of ``table1`` ignore
# SIGINT (their parent forwards a Ctrl-C to them as SIGTERM) and note a SIGTERM that arrives
# outside a run in ``pending`` (see :func:`worker_signals`).
SIGNALS = (signal.SIGINT, signal.SIGTERM)
pending: Optional[int] = None


def _note(signum, frame):  # noqa: ARG001
    global pending
    pending = signum


def worker_signals() -> None:
    """Signal set-up of a worker process: SIGINT ignored, SIGTERM noted (a run in progress saves
    and stops; a run not started yet is not started)."""
    global SIGNALS
    SIGNALS = (signal.SIGTERM,)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _note)


class Stopper:
    """Decides when to save; a context manager that installs the SIGINT/SIGTERM handlers."""

    def __init__(self, minutes: float, d: Optional[distributed.Dist], device=None):
        self.minutes, self.d, self.device = minutes, d or distributed.Dist(), device
        self.signum: Optional[int] = None
        self.last = time.monotonic()
        self.calls = 0
        self._old = {}
        self._at = -1e9  # when the first stop signal arrived

    def _handle(self, signum, frame):  # noqa: ARG002
        now = time.monotonic()
        relayed = self.d.enabled and now - self._at < RELAY_SECONDS  # torchrun passes the terminal's Ctrl-C on
        if self.signum is not None and signum == signal.SIGINT and not relayed:
            raise KeyboardInterrupt
        if self.signum is None:
            self._at = now
        self.signum = signum

    def __enter__(self) -> "Stopper":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
            if pending is not None:  # arrived while the run was starting: stop at the first check
                self.signum = pending
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def check(self, force: bool = False) -> Tuple[bool, bool]:
        """``(save, stop)``: save a checkpoint now; then stop (a signal arrived on some rank).
        Under torchrun the ranks compare notes every ``SYNC_EVERY`` calls (or when ``force``),
        which costs one tiny all-reduce (a device sync on GPUs); alone, every call."""
        self.calls += 1
        if self.d.enabled and not force and self.calls % SYNC_EVERY:
            return False, False
        due = self.minutes > 0 and time.monotonic() - self.last >= 60 * self.minutes
        due, stop = distributed.any_flag([due, self.signum is not None], self.d, self.device)
        return due or stop, stop

    def saved(self) -> None:
        self.last = time.monotonic()

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a signal on another rank"

    @property
    def exit_signal(self) -> int:
        return self.signum or signal.SIGTERM


def command_line(d: distributed.Dist, args: str) -> str:
    """The shell command that runs ``qtrain train ARGS`` the way this run was launched."""
    launcher = f"torchrun --nproc_per_node {d.world_size} -m qtrain" if d.enabled else "qtrain"
    return f"{launcher} train {args}"


def kept_hint(ckpt_path: Path, keep: bool, saved_at: list) -> str:
    """Which checkpoint a stopped run kept."""
    if not keep or not saved_at:
        return "no checkpoint was kept"
    return f"the last good checkpoint ({saved_at[0]}) is kept in {ckpt_path}"


def lower_lr_hint(cfg, out_dir: Path, keep: bool, d: distributed.Dist) -> str:
    """A command that trains a diverged run again, in a new folder, at a tenth of its lr."""
    lr = f"{cfg.lr / 10:g}"
    if not keep:
        return f"train again with a lower lr, e.g. --lr {lr}"
    config, new = shlex.quote(str(out_dir / "config.json")), shlex.quote(f"{out_dir}-lr{lr}")
    return f"train again with a lower lr: {command_line(d, f'--config {config} --lr {lr} --out {new}')}"
