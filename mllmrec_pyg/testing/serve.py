"""Run ``transformers serve`` or ``llama_cpp.server`` on a loopback port for tests and benchmarks.

:func:`serve_transformers` and :func:`serve_llamacpp` start an OpenAI-compatible
server as a child process on ``127.0.0.1``, wait (bounded) until it answers,
and stop it on exit, so the ``openai`` backend can be exercised end to end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ServedModel:
    """A running server.

    Args:
        base_url: the API root (``http://127.0.0.1:<port>/v1``).
        model: the model name to send (the served folder, as given to the server).
        port: the TCP port.
        pid: the server's process id.
        log_path: where its stdout and stderr go.
    """

    base_url: str
    model: str
    port: int
    pid: int
    log_path: Path


def _log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "<no log>"


def _healthy(port: int, path: str = "/health") -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def serve_transformers(
    model_dir: str | os.PathLike[str],
    *,
    port: int | None = None,
    quantization: str | None = "bnb-4bit",
    device: str = "cpu",
    startup_timeout: float = 180.0,
    log_dir: str | os.PathLike[str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[ServedModel]:
    """Serve ``model_dir`` with ``transformers serve`` on 127.0.0.1.

    Args:
        model_dir: a local model folder (e.g. from :func:`build_tiny_gemma`).
        port: the port; a free one when ``None``.
        quantization: ``"bnb-4bit"`` (NF4 + double quantisation, like the
            ``transformers`` backend), ``"bnb-8bit"`` or ``None``.
        device: the server's device.
        startup_timeout: seconds to wait for ``/health`` before giving up.
        log_dir: folder for the server log; a temporary one when ``None``.
        extra_args: more ``transformers serve`` options.

    Raises:
        RuntimeError: the server exited or did not answer in time (the
            message carries the end of its log).
    """
    port = port or free_port()
    model = str(model_dir)
    log_path = _log_path(log_dir, f"transformers-serve-{port}.log")
    cmd = [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        device,
        *(("--quantization", quantization) if quantization else ()),
        *extra_args,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    yield from _served(
        cmd, "transformers serve", "/health", model, port, log_path, startup_timeout, env
    )


@contextlib.contextmanager
def serve_llamacpp(
    gguf: str | os.PathLike[str],
    *,
    port: int | None = None,
    n_ctx: int = 2048,
    threads: int = 1,
    startup_timeout: float = 120.0,
    log_dir: str | os.PathLike[str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[ServedModel]:
    """Serve a GGUF file with ``python -m llama_cpp.server`` on 127.0.0.1.

    The server (``pip install 'llama-cpp-python[server]'``) renders the GGUF's
    chat template and answers ``/v1/chat/completions``; the model name to send
    is the file's path as given here.

    Raises:
        RuntimeError: the server exited or did not answer ``/v1/models`` in time
            (the message carries the end of its log).
    """
    port = port or free_port()
    model = str(gguf)
    log_path = _log_path(log_dir, f"llama-cpp-server-{port}.log")
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)]
    cmd += ["--n_threads", str(threads), "--n_threads_batch", str(threads), *extra_args]
    yield from _served(
        cmd, "llama_cpp.server", "/v1/models", model, port, log_path, startup_timeout
    )


def _log_path(log_dir: str | os.PathLike[str] | None, name: str) -> Path:
    """``<log_dir>/<name>``, the folder made if needed (a temporary one when ``None``)."""
    root = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="serve-"))
    root.mkdir(parents=True, exist_ok=True)
    return root / name


def _served(
    cmd: list[str],
    name: str,
    health: str,
    model: str,
    port: int,
    log_path: Path,
    startup_timeout: float,
    env: dict[str, str] | None = None,
) -> Iterator[ServedModel]:
    """Start ``cmd`` logging to ``log_path``, wait until ``health`` answers on ``port``,
    yield the :class:`ServedModel`, and stop the server (terminate, then kill) after."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(port, health):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode} before answering {health}; "
                    f"log {log_path}:\n{_log_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} did not answer {health} on port {port} within "
                    f"{startup_timeout:g} s; log {log_path}:\n{_log_tail(log_path)}"
                )
            time.sleep(0.5)
        logger.info("%s (pid %d) is up on 127.0.0.1:%d", name, proc.pid, port)
        yield ServedModel(
            base_url=f"http://127.0.0.1:{port}/v1",
            model=model,
            port=port,
            pid=proc.pid,
            log_path=log_path,
        )
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
