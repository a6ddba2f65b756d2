"""The thread policy: settings, the OpenMP environment and the batch-timed choice."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from mllmrec_pyg import threads
from mllmrec_pyg.threads import (
    ThreadTuner,
    active_tuner,
    apply_thread_policy,
    busy_cores,
    configure_openmp,
    default_threads,
    tuned,
    usable_cores,
)


@pytest.fixture(autouse=True)
def restore():
    before = torch.get_num_threads()
    yield
    apply_thread_policy(before)  # a fixed count again, no tuner


def test_fixed_count_and_auto(monkeypatch):
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    assert apply_thread_policy(1) == 1 == torch.get_num_threads()
    assert active_tuner() is None
    n = apply_thread_policy(None)
    assert 1 <= n <= usable_cores()
    assert isinstance(active_tuner(), ThreadTuner)
    assert apply_thread_policy("1") == 1 and active_tuner() is None
    apply_thread_policy("auto")
    assert active_tuner() is not None


def test_environment_setting(monkeypatch):
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    assert apply_thread_policy() == 1 and active_tuner() is None
    monkeypatch.setenv(threads.THREADS_ENV, "auto")
    apply_thread_policy()
    assert active_tuner() is not None


@pytest.mark.parametrize("bad", [0, -2, "two", "1.5"])
def test_bad_settings_raise(bad):
    with pytest.raises(ValueError, match="positive integer or 'auto'"):
        apply_thread_policy(bad)


def test_configure_openmp_keeps_the_users_choice(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    assert configure_openmp() is False  # torch is already imported here
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    configure_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_configure_openmp_before_torch_in_a_fresh_process():
    code = (
        "import os\n"
        "from mllmrec_pyg.threads import configure_openmp\n"
        "assert configure_openmp()\n"
        "import torch\n"
        "print(os.environ['OMP_WAIT_POLICY'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "PASSIVE"


def test_core_counts():
    assert 0.0 <= busy_cores(0.05) <= usable_cores() + 1e-6
    assert 1 <= default_threads(0.05) <= usable_cores()


def _epoch(tuner: ThreadTuner, num_batches: int, cost: dict[int, float]) -> list[int]:
    """Run one epoch of fake batches whose duration depends on the thread count."""
    used = []
    for _ in tuner.batches(range(num_batches)):
        n = torch.get_num_threads()
        used.append(n)
        time.sleep(cost[n])
    return used


def test_tuner_keeps_the_faster_count_and_reprobes_after_a_slowdown():
    tuner = ThreadTuner(max_threads=2, probe_batches=2, reprobe_every=50)
    fast_two = {1: 0.05, 2: 0.015}
    used = _epoch(tuner, 10, fast_two)
    assert used[:4] == [1, 2, 1, 2]  # the probe alternates
    assert tuner.chosen == 2 and set(used[4:]) == {2}
    assert _epoch(tuner, 10, fast_two) == [2] * 10  # no probe while nothing changes
    slow_two = {1: 0.015, 2: 0.08}  # another job starts: two threads become slow
    _epoch(tuner, 10, slow_two)
    used = _epoch(tuner, 10, slow_two)  # probes again and switches
    assert used[:4] == [1, 2, 1, 2] and tuner.chosen == 1 and set(used[4:]) == {1}
    assert [epoch for epoch, _ in tuner.history] == [1, 4]


def test_tuner_decides_by_the_median_batch():
    tuner = ThreadTuner(max_threads=2, probe_batches=3, reprobe_every=50)
    durations = iter([0.2, 0.03, 0.01, 0.03, 0.01, 0.03])  # 1, 2, 1, 2, 1, 2: one slow batch
    for _ in tuner.batches(range(6)):
        time.sleep(next(durations))
    assert tuner.chosen == 1  # the mean (0.073 vs 0.03) would have chosen 2


def test_tuner_reprobes_periodically_and_spans_short_epochs():
    tuner = ThreadTuner(max_threads=2, probe_batches=1, reprobe_every=2)
    cost = {1: 0.015, 2: 0.05}
    assert _epoch(tuner, 1, cost) == [1]  # the probe goes on in the next epoch
    assert _epoch(tuner, 1, cost) == [2]
    assert tuner.chosen == 1
    _epoch(tuner, 3, cost)
    _epoch(tuner, 3, cost)
    assert _epoch(tuner, 3, cost)[:2] == [1, 2]  # reprobe after reprobe_every epochs
    assert len(tuner.history) == 2


def test_single_core_never_probes():
    tuner = ThreadTuner(max_threads=1)
    assert _epoch(tuner, 5, {1: 0.0}) == [1] * 5
    assert tuner.history == []


def test_tuned_is_transparent_without_a_tuner():
    apply_thread_policy(1)
    batches = [1, 2, 3]
    assert tuned(batches) is batches


def test_evaluation_blocks_have_a_tuner_of_their_own():
    from mllmrec_pyg.metrics import FullRankEvaluator

    gen = torch.Generator().manual_seed(0)
    train = torch.stack(
        [torch.randint(0, 40, (300,), generator=gen), torch.randint(0, 30, (300,), generator=gen)]
    )
    held = torch.stack([torch.arange(40), torch.randint(0, 30, (40,), generator=gen)])
    ev = FullRankEvaluator(train, 40, 30, {"valid": held}, ks=(5,), block_size=8)
    table = torch.randn(40, 30, generator=gen)
    users = torch.arange(40)
    apply_thread_policy(1)
    want = ev.rank(lambda u: table[u], users, 5)
    apply_thread_policy("auto")
    tuner = active_tuner()
    assert tuner.evaluation is not None and tuner.evaluation is not tuner
    got = ev.rank(lambda u: table[u], users, 5)  # 5 blocks: the probe starts
    got_again = ev.rank(lambda u: table[u], users, 5)  # and ends here (5 + 5 blocks)
    assert torch.equal(got, want) and torch.equal(got_again, want)
    if len(tuner.evaluation.candidates) > 1:
        assert tuner.evaluation.history and not tuner.history  # training was not probed
