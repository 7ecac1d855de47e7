"""threads.configure: the job's math libraries get the CPUs it reserved."""

from __future__ import annotations

import os

import pytest

from clowder_ml.runner import threads


@pytest.fixture
def thread_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # set through monkeypatch so the values configure() writes are undone afterwards
    for var in threads.THREAD_VARS:
        monkeypatch.setenv(var, "99")


@pytest.mark.parametrize(("cpus", "expected"), [(2.5, 2), (0.25, 1), (1.0, 1), (8.0, 8)])
def test_configure_sets_the_thread_variables(cpus: float, expected: int,
                                             thread_env: None) -> None:
    assert threads.configure(cpus) == expected
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        assert os.environ[var] == str(expected)


def test_configure_sets_torch_threads(thread_env: None) -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        assert threads.configure(2.5) == 2
        assert torch.get_num_threads() == 2
        threads.configure(0.25)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
