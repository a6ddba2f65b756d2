"""The ``openai`` backend: any OpenAI-compatible chat-completions server.

Works with vLLM (``vllm serve``), Ollama (``http://localhost:11434/v1``),
``transformers serve`` and hosted APIs. Images travel inline as base64
``data:`` URLs, ``max_concurrency`` requests are in flight at once (threads),
and a request that meets a time-out, a dropped connection, 408/409/429 or a
5xx answer is retried with capped exponential backoff plus jitter. Any other
error (400, 401, 404, ...) fails at once. The API key is read from an
environment variable and is never logged, printed or fingerprinted.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from mllmrec_pyg.reasoning.backends._common import (
    BackendError,
    check_requests,
    image_data_url,
    make_config,
    progress_bar,
    require,
)
from mllmrec_pyg.reasoning.backends.base import GenerationRequest

logger = logging.getLogger(__name__)

#: HTTP statuses worth another try: time-out, conflict, rate limit, server errors.
RETRY_STATUSES = frozenset({408, 409, 429})


class _Cancelled(Exception):
    """Raised inside a worker when the call was abandoned."""


@dataclass
class OpenAIBackendConfig:
    """Settings of :class:`OpenAIBackend`.

    Args:
        model: the model name the server knows (``gemma3:27b`` on Ollama,
            ``google/gemma-3-27b-it`` on vLLM, the folder for ``transformers serve``).
        base_url: the API root, ending in ``/v1``.
        api_key_env: the environment variable that holds the API key. Unset
            is fine for local servers (a placeholder is sent).
        max_concurrency: requests in flight at once.
        max_new_tokens: ``max_tokens`` of each request.
        temperature: 0 = greedy decoding (the default).
        top_p: nucleus mass; ``None`` = server default (not sent).
        seed: sent when not ``None`` (vLLM, Ollama and ``transformers serve`` honour it).
        system_prompt: an optional system message before each prompt.
        timeout: seconds to wait for one response before retrying.
        max_retries: retries after the first attempt (so ``max_retries + 1`` tries).
        backoff_initial: the first retry waits about this long (seconds) ...
        backoff_max: ... doubling each time up to this cap; a ``Retry-After``
            header is honoured up to the cap as well.
        max_image_side: shrink larger images (aspect kept) before sending;
            ``None`` sends them as they are.
        progress: show a progress bar when a call has several requests.
    """

    model: str = "google/gemma-3-27b-it"
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 8
    max_new_tokens: int = 160
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None
    system_prompt: str | None = None
    timeout: float = 300.0
    max_retries: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    max_image_side: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency={self.max_concurrency}: must be >= 1")
        if self.max_retries < 0:
            raise ValueError(f"max_retries={self.max_retries}: must be >= 0")
        if self.timeout <= 0:
            raise ValueError(f"timeout={self.timeout}: must be > 0")
        if self.backoff_initial < 0 or self.backoff_max < 0:
            raise ValueError("backoff_initial and backoff_max must be >= 0")


class OpenAIBackend:
    """An OpenAI-compatible server driven with ``max_concurrency`` requests in flight.

    Args:
        config: the settings; :class:`OpenAIBackendConfig` defaults when ``None``.
        **overrides: single settings to change, e.g. ``base_url=...``.

    Example::

        backend = OpenAIBackend(model="gemma3:27b", base_url="http://localhost:11434/v1")
        texts = backend.generate(requests)
    """

    name = "openai"

    def __init__(self, config: OpenAIBackendConfig | None = None, **overrides: Any):
        self.config = make_config(OpenAIBackendConfig, config, overrides)
        self._client = None
        self._client_lock = threading.Lock()
        self._rng = random.Random()
        #: attempts made by the last :meth:`generate` call, by request index.
        self.last_attempts: dict[int, int] = {}

    def __repr__(self) -> str:
        c = self.config
        return (
            f"{type(self).__name__}(model={c.model!r}, base_url={c.base_url!r}, "
            f"max_concurrency={c.max_concurrency}, max_new_tokens={c.max_new_tokens}, "
            f"temperature={c.temperature})"
        )

    @property
    def parallelism(self) -> int:
        """How many requests are worth handing to one :meth:`generate` call."""
        return self.config.max_concurrency

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the generated text (not URL, key or concurrency)."""
        c = self.config
        return {
            "backend": self.name,
            "model": c.model,
            "max_new_tokens": c.max_new_tokens,
            "temperature": c.temperature,
            "top_p": c.top_p,
            "seed": c.seed,
            "system_prompt": c.system_prompt,
            "max_image_side": c.max_image_side,
        }

    # ----------------------------------------------------------------- client
    def _openai(self):
        return require("openai", "serve", "openai backend")

    def _get_client(self):
        with self._client_lock:
            if self._client is None:
                openai = self._openai()
                key = os.environ.get(self.config.api_key_env)
                if not key:
                    logger.debug(
                        "%s is not set; sending a placeholder API key", self.config.api_key_env
                    )
                self._client = openai.OpenAI(
                    base_url=self.config.base_url,
                    api_key=key or "not-needed",
                    timeout=self.config.timeout,
                    max_retries=0,  # retries are ours: bounded, logged, with jitter
                )
            return self._client

    def close(self) -> None:
        """Close the HTTP connections (a later call opens new ones)."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- requests
    def _messages(self, request: GenerationRequest) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [
            {
                "type": "image_url",
                "image_url": {"url": image_data_url(img, request.key, self.config.max_image_side)},
            }
            for img in request.images
        ]
        content.append({"type": "text", "text": request.prompt})
        messages: list[dict[str, Any]] = []
        if self.config.system_prompt:
            messages.append({"role": "system", "content": self.config.system_prompt})
        # text alone goes as a plain string: every server takes that, while some
        # (llama_cpp.server's chat formats) fail on a list of parts
        messages.append({"role": "user", "content": content if request.images else request.prompt})
        return messages

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        c = self.config
        cap = min(c.backoff_max, c.backoff_initial * 2 ** (attempt - 1))
        delay = cap / 2 + self._rng.uniform(0, cap / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, c.backoff_max))
        return delay

    @staticmethod
    def _retry_after(err: Any) -> float | None:
        response = getattr(err, "response", None)
        value = response.headers.get("retry-after") if response is not None else None
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    def _classify(self, err: Exception) -> tuple[bool, str]:
        """Whether ``err`` is worth a retry, and a short description of it."""
        openai = self._openai()
        if isinstance(err, openai.APITimeoutError):
            return True, f"no answer within {self.config.timeout:g} s"
        if isinstance(err, openai.APIConnectionError):
            cause = err.__cause__ or err
            return True, f"connection failed ({type(cause).__name__}: {cause})"
        if isinstance(err, openai.APIStatusError):
            status = err.status_code
            detail = str(getattr(err, "message", err))[:300]
            return status in RETRY_STATUSES or status >= 500, f"HTTP {status}: {detail}"
        return False, f"{type(err).__name__}: {err}"

    def _complete(self, index: int, request: GenerationRequest, stop: threading.Event) -> str:
        if stop.is_set():
            raise _Cancelled
        c = self.config
        openai = self._openai()
        params: dict[str, Any] = {
            "model": c.model,
            "messages": self._messages(request),
            "max_tokens": c.max_new_tokens,
            "temperature": c.temperature,
        }
        if c.top_p is not None:
            params["top_p"] = c.top_p
        if c.seed is not None:
            params["seed"] = c.seed
        client = self._get_client()
        attempt = 0
        while True:
            attempt += 1
            self.last_attempts[index] = attempt
            try:
                response = client.chat.completions.create(**params)
            except openai.OpenAIError as err:
                retry, why = self._classify(err)
                if not retry:
                    raise BackendError(
                        f"request {request.key!r} to {c.base_url} failed: {why}", key=request.key
                    ) from err
                if attempt > c.max_retries:
                    raise BackendError(
                        f"request {request.key!r} to {c.base_url} failed after {attempt} "
                        f"attempts: {why}",
                        key=request.key,
                    ) from err
                delay = self._backoff(attempt, self._retry_after(err))
                logger.warning(
                    "request %r: %s; retry %d/%d in %.2f s",
                    request.key,
                    why,
                    attempt,
                    c.max_retries,
                    delay,
                )
                if stop.wait(delay):
                    raise _Cancelled from err
                continue
            if not response.choices:
                raise BackendError(f"request {request.key!r}: the server returned no choices")
            text = response.choices[0].message.content or ""
            if not text.strip():
                logger.warning("request %r: the server returned an empty text", request.key)
            return text.strip()

    def generate(self, requests: list[GenerationRequest]) -> list[str]:
        """Generate one text per request, in request order.

        Args:
            requests: prompts, each with zero or more images (PIL or paths).

        Raises:
            BackendError: a request failed for good; ``err.key`` names it and
                ``err.partial`` holds the texts finished before the failure.
            BackendInputError: a request is malformed or an image unreadable.
        """
        requests = check_requests(requests)
        if not requests:
            return []
        self.last_attempts = {}
        results: dict[int, str] = {}
        stop = threading.Event()
        workers = min(self.config.max_concurrency, len(requests))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-backend")
        futures: dict[Future[str], int] = {}
        try:
            show = self.config.progress and len(requests) > 1
            with progress_bar(self.name, len(requests), show) as bar:
                futures = {
                    pool.submit(self._complete, i, r, stop): i for i, r in enumerate(requests)
                }
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for fut in done:
                        err = fut.exception()
                        if err is None:
                            results[futures[fut]] = fut.result()
                            bar.update(1)
                    failed = [f for f in done if f.exception() is not None]
                    if failed:
                        stop.set()
                        for fut in pending:
                            fut.cancel()
                        # let in-flight requests finish so their texts are kept
                        for fut in wait(pending).done:
                            if not fut.cancelled() and fut.exception() is None:
                                results[futures[fut]] = fut.result()
                        raise self._first_error(failed, futures, results)
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
        return [results[i] for i in range(len(requests))]

    @staticmethod
    def _first_error(
        failed: list[Future[str]], futures: dict[Future[str], int], results: dict[int, str]
    ) -> Exception:
        fut = min(failed, key=lambda f: futures[f])
        err = fut.exception()
        assert err is not None
        if isinstance(err, BackendError):
            err.partial = dict(results)
        return err
