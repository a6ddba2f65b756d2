"""Shared fixtures. Nothing here reaches the network: the hub is switched off."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# one fixed thread: results are bitwise reproducible only with a fixed count (mllmrec_pyg.threads)
os.environ.setdefault("MLLMREC_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random Gemma 3 (text + vision, Gemma's special tokens), built once
    per session; see :func:`mllmrec_pyg.testing.build_tiny_gemma`."""
    from mllmrec_pyg.testing import build_tiny_gemma

    return build_tiny_gemma(tmp_path_factory.mktemp("tiny_gemma") / "model")


def cli_error(capsys: pytest.CaptureFixture, argv: list[str], code: int = 1) -> str:
    """Run ``mllmrec argv``, expect a one-line error with exit status ``code``; return it."""
    from mllmrec_pyg.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == code, exc.value.code
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err), err
    return err[-1]
