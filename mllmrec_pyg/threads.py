"""How many CPU threads torch uses, and how its OpenMP threads wait.

Torch runs its CPU kernels on OpenMP threads, by default one per core, and
those threads spin while they wait for work. On a quiet machine that is the
fastest choice for large matrix products; on a machine where something else
is running (a laptop, a shared server) the spinning threads compete with the
other job and with each other, and an epoch can become ten or more times
slower than with a single thread. The policy here:

1. **Passive waiting.** :func:`configure_openmp` sets ``OMP_WAIT_POLICY=PASSIVE``
   (idle OpenMP threads sleep instead of spinning). It only takes effect if it
   runs before torch is imported: the ``mllmrec`` command calls it first
   thing; elsewhere set the variable in the environment.
2. **A starting thread count from the cores that are free now.**
   :func:`default_threads` counts the cores this process may run on
   (``os.sched_getaffinity``) and subtracts the cores other processes kept busy
   during a short sample of ``/proc/stat``.
3. **Measured during training.** With the ``"auto"`` setting the trainer
   times its batches (and, with a tuner of its own, the evaluator its
   blocks of users): at the start, and again every ``reprobe_every`` epochs
   or as soon as batches become markedly slower, a few batches run with one
   thread and a few with all usable cores, and the faster count is kept
   (:class:`ThreadTuner`).

``apply_thread_policy(None)`` (the default of ``mllmrec train --threads``)
turns on all three; ``apply_thread_policy(n)`` fixes ``n`` threads (with
passive waiting if it could still be set). Results are bitwise reproducible
only with a fixed thread count (``1`` is the safe choice): several torch
kernels sum in a different order with two threads than with one.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Environment variable read by :func:`apply_thread_policy` when no count is given:
#: a positive integer or ``auto``.
THREADS_ENV = "MLLMREC_THREADS"


def configure_openmp(wait_policy: str = "PASSIVE") -> bool:
    """Ask OpenMP threads to sleep rather than spin while waiting.

    Sets ``OMP_WAIT_POLICY`` unless the user already set it (or set
    ``GOMP_SPINCOUNT``). OpenMP reads it once, when torch loads it.

    Returns:
        ``True`` if the setting can still take effect (torch not imported yet).
    """
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = wait_policy
    return "torch" not in sys.modules


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _cpu_times(cpus: set[int] | None) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over ``cpus`` (all if ``None``) from ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        values = [float(v) for v in fields[:8]]
        idle = values[3] + values[4]  # idle + iowait
        total += sum(values)
        busy += sum(values) - idle
    return busy, total


def busy_cores(sample_seconds: float = 0.2) -> float:
    """How many of this process's usable cores other processes keep busy, sampled now.

    The calling thread sleeps during the sample, so the busy time is the
    rest of the machine's. Returns 0 where ``/proc/stat`` is unavailable.
    """
    try:
        cpus: set[int] | None = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = None
    before = _cpu_times(cpus)
    if before is None:
        return 0.0
    time.sleep(sample_seconds)
    after = _cpu_times(cpus)
    if after is None:
        return 0.0
    busy, total = after[0] - before[0], after[1] - before[1]
    if total <= 0:
        return 0.0
    return usable_cores() * busy / total


def default_threads(sample_seconds: float = 0.2) -> int:
    """Usable cores minus the cores other processes keep busy now (rounded), at least 1."""
    cores = usable_cores()
    if cores == 1:
        return 1
    return max(1, min(cores, round(cores - busy_cores(sample_seconds))))


class ThreadTuner:
    """Chooses between one thread and all usable cores by timing training batches.

    A probe runs ``probe_batches`` batches with each candidate count,
    alternating (1, n, 1, n, ...), and keeps the count with the smaller median
    batch time (one batch slowed by something else does not decide); the
    larger count must be ``margin`` times faster to be chosen. A probe runs in
    the first epoch, every ``reprobe_every``
    epochs, and in the epoch after one whose median batch time was
    ``slowdown`` times the chosen count's probe time (another job started).

    Args:
        max_threads: the largest count tried (default: usable cores).
        probe_batches: batches timed per candidate in a probe.
        reprobe_every: epochs between probes while nothing changes.
        slowdown: a median batch time this many times the probe's triggers a new probe.
        margin: how much faster (ratio of median batch times) more threads must be.
    """

    def __init__(
        self,
        max_threads: int | None = None,
        probe_batches: int = 5,
        reprobe_every: int = 10,
        slowdown: float = 1.5,
        margin: float = 1.1,
    ) -> None:
        self.candidates = sorted({1, max(1, int(max_threads or usable_cores()))})
        self.probe_batches = int(probe_batches)
        self.reprobe_every = int(reprobe_every)
        self.slowdown = float(slowdown)
        self.margin = float(margin)
        import torch

        self.chosen = min(torch.get_num_threads(), self.candidates[-1])
        self.reference: float | None = None
        self._epochs_since_probe = 0
        self._probe_pending = len(self.candidates) > 1
        self._schedule: list[int] = []
        self._trials: dict[int, list[float]] = {}
        self.history: list[tuple[int, dict[int, float]]] = []  # (epoch, median s per batch)
        self._epoch = 0
        #: a tuner of its own for full-ranking evaluation blocks (their best count can
        #: differ from the training steps'), set by ``apply_thread_policy(None)``
        self.evaluation: ThreadTuner | None = None

    def _set(self, n: int) -> None:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)

    def batches(self, batches: Iterable[T]) -> Iterator[T]:
        """Yield ``batches`` (one epoch), setting the thread count and timing each one.

        The time of a batch is measured from one ``yield`` to the next, i.e.
        the caller's whole training step.
        """
        self._epoch += 1
        if self._probe_pending and not self._schedule:  # a new probe
            self._trials = {c: [] for c in self.candidates}
            self._schedule = [c for _ in range(self.probe_batches) for c in self.candidates]
            self._probe_pending = False
        probed = False
        times: list[float] = []
        for batch in batches:
            n = self._schedule[0] if self._schedule else self.chosen
            self._set(n)
            start = time.perf_counter()
            yield batch
            elapsed = time.perf_counter() - start
            if self._schedule:
                self._trials[self._schedule.pop(0)].append(elapsed)
                if not self._schedule:
                    self._decide()
                    probed = True
            else:
                times.append(elapsed)
        self._set(self.chosen)
        if self._schedule:  # the probe goes on in the next epoch (few batches per epoch)
            return
        self._epochs_since_probe = 0 if probed else self._epochs_since_probe + 1
        if len(self.candidates) < 2:
            return
        if self._epochs_since_probe >= self.reprobe_every:
            self._probe_pending = True
        elif times and self.reference is not None:
            median = sorted(times)[len(times) // 2]
            if median > self.slowdown * self.reference:
                log.debug("batches %.1fx slower than at the last probe", median / self.reference)
                self._probe_pending = True

    def _decide(self) -> None:
        medians = {c: sorted(t)[(len(t) - 1) // 2] for c, t in self._trials.items() if t}
        # more threads must win by a margin: one thread is the robust choice on a busy machine
        best = min(medians)
        for c in sorted(medians):
            if medians[c] * self.margin < medians[best]:
                best = c
        if best != self.chosen:
            log.debug("threads: %d -> %d (s per batch: %s)", self.chosen, best, medians)
        self.chosen = best
        self.reference = medians[best]
        self.history.append((self._epoch, medians))


_tuner: ThreadTuner | None = None


def active_tuner() -> ThreadTuner | None:
    """The tuner installed by ``apply_thread_policy(None)``, or ``None`` (fixed count)."""
    return _tuner


def use_tuner(tuner: ThreadTuner | None) -> None:
    """Install ``tuner`` as the active one (``None``: a fixed count, no tuning)."""
    global _tuner
    _tuner = tuner


def tuned(batches: Iterable[T]) -> Iterable[T]:
    """``batches`` run under the active :class:`ThreadTuner`, or unchanged if there is none."""
    return batches if _tuner is None else _tuner.batches(batches)


def tuned_evaluation(blocks: Iterable[T]) -> Iterable[T]:
    """Evaluation ``blocks`` run under the active tuner's evaluation tuner, if any."""
    tuner = _tuner.evaluation if _tuner is not None else None
    return blocks if tuner is None else tuner.batches(blocks)


def apply_thread_policy(threads: int | str | None = None) -> int:
    """Set how many threads torch uses for training, evaluation, encoding and graph builds.

    Args:
        threads: a positive count (fixed for the whole run), or ``None`` /
            ``"auto"`` for the adaptive default: start from
            :func:`default_threads` and let the trainer re-measure (see
            :class:`ThreadTuner`). ``None`` first reads ``MLLMREC_THREADS``.

    Returns:
        The thread count torch uses now.

    Also asks OpenMP to wait passively (:func:`configure_openmp`) where torch
    has not been imported yet.
    """
    global _tuner
    if threads is None:
        threads = os.environ.get(THREADS_ENV) or "auto"
    if isinstance(threads, str):
        text = threads.strip().lower()
        if text == "auto":
            threads = None
        elif text.isdigit():
            threads = int(text)
        else:
            raise ValueError(f"threads must be a positive integer or 'auto', got {threads!r}")
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be a positive integer or 'auto', got {threads!r}")
    configure_openmp()
    import torch

    if threads is None:
        n = default_threads()
        torch.set_num_threads(n)
        _tuner = ThreadTuner()
        _tuner.evaluation = ThreadTuner()
        log.debug("threads: auto, starting with %d of %d usable cores", n, usable_cores())
    else:
        torch.set_num_threads(int(threads))
        _tuner = None
    return torch.get_num_threads()


__all__ = [
    "THREADS_ENV",
    "ThreadTuner",
    "active_tuner",
    "apply_thread_policy",
    "busy_cores",
    "configure_openmp",
    "default_threads",
    "tuned",
    "tuned_evaluation",
    "usable_cores",
    "use_tuner",
]
