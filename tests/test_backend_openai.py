"""The ``openai`` backend against real HTTP servers on 127.0.0.1.

* a real ``transformers serve`` process serving the tiny Gemma 3 in 4-bit,
  driven with several requests in flight; its answers must equal the
  in-process ``transformers`` backend's on the same model and prompts;
* a small scripted ``http.server`` for what a healthy model server rarely
  does on demand: answering slowly, 500 then 200, 429, 400, and for checking
  what goes over the wire (data URLs, the API key, concurrency);
* a port with nothing listening (server down).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from PIL import Image

from mllmrec_pyg.reasoning.backends import (
    Backend,
    BackendError,
    BackendInputError,
    GenerationRequest,
    get_backend,
)
from mllmrec_pyg.reasoning.backends.openai_backend import OpenAIBackend, OpenAIBackendConfig
from mllmrec_pyg.testing import free_port, serve_transformers

MAX_NEW = 6
FAST = {"backoff_initial": 0.01, "backoff_max": 0.05}


def _noise(seed: int, size=(48, 40)) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


# --------------------------------------------------------------------------
# A scripted OpenAI-style server
# --------------------------------------------------------------------------
@dataclass
class Reply:
    status: int = 200
    text: str = "ok"
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    body: dict
    headers: dict[str, str]


class ScriptedServer:
    """``script(n, body) -> Reply`` answers the n-th request (0-based)."""

    def __init__(self, script: Callable[[int, dict], Reply]):
        self.script = script
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                with outer._lock:
                    n = len(outer.seen)
                    outer.seen.append(Seen(body, {k.lower(): v for k, v in self.headers.items()}))
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    reply = outer.script(n, body)
                    time.sleep(reply.delay)
                    if reply.status == 200:
                        payload = {
                            "id": f"cmpl-{n}",
                            "object": "chat.completion",
                            "created": 0,
                            "model": body.get("model", "m"),
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": reply.text},
                                    "finish_reason": "stop",
                                }
                            ],
                        }
                    else:
                        payload = {"error": {"message": f"scripted {reply.status}", "type": "x"}}
                    data = json.dumps(payload).encode()
                finally:
                    # answered: no longer in flight. Counted before the reply is written, as
                    # the client may send its next request the moment the reply arrives
                    with outer._lock:
                        outer.in_flight -= 1
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (time-out tests)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @contextmanager
    def running(self):
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.httpd.shutdown()
            self.httpd.server_close()
            thread.join(timeout=5)


def _prompt_of(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):  # text alone is sent as a plain string
        return content
    return [p for p in content if p["type"] == "text"][0]["text"]


def _echo(n: int, body: dict) -> Reply:
    return Reply(text=f"echo {_prompt_of(body)}", delay=0.2)


# --------------------------------------------------------------------------
# Against a real `transformers serve`
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tiny_gemma_dir, tmp_path_factory):
    with serve_transformers(
        tiny_gemma_dir,
        quantization="bnb-4bit",
        startup_timeout=240,
        log_dir=tmp_path_factory.mktemp("serve-log"),
    ) as server:
        yield server


@pytest.mark.slow
def test_transformers_serve_concurrent_equals_in_process(served, tiny_gemma_dir, tmp_path):
    from mllmrec_pyg.reasoning.backends.hf import TransformersBackend

    _noise(7).save(tmp_path / "a.png")
    _noise(8, (64, 32)).save(tmp_path / "b.jpg", quality=85)
    prompt = "please describe the image for the baby dataset"
    requests = [
        GenerationRequest("r0", prompt, [_noise(1)]),
        GenerationRequest("r1", "soft blue blanket", [tmp_path / "a.png"]),
        GenerationRequest("r2", prompt, [str(tmp_path / "b.jpg")]),
        GenerationRequest("r3", "the user likes a red toy and a green bottle"),
        GenerationRequest("r4", "soft blue blanket", [_noise(2)]),
        GenerationRequest("r5", "color", [_noise(3, (30, 90))]),
    ]
    backend = OpenAIBackend(
        model=served.model,
        base_url=served.base_url,
        max_concurrency=4,
        max_new_tokens=MAX_NEW,
        timeout=120,
        progress=False,
    )
    with backend:
        texts = backend.generate(requests)
    assert backend.last_attempts == {i: 1 for i in range(len(requests))}
    local = TransformersBackend(model=str(tiny_gemma_dir), batch_size=3, max_new_tokens=MAX_NEW)
    assert texts == local.generate(requests)  # same model, same greedy text, same order
    assert len(set(texts)) >= 3 and all(texts)
    log = served.log_path.read_text(errors="replace")
    # the server logs each request (its own line, or uvicorn's access line, by version)
    seen = max(log.count("Request received"), log.count("POST /v1/chat/completions"))
    assert seen >= len(requests)


@pytest.mark.slow
def test_transformers_serve_rejects_unknown_model_without_retry(served):
    backend = OpenAIBackend(
        model="not-the-served-model",
        base_url=served.base_url,
        max_retries=3,
        progress=False,
        **FAST,
    )
    with pytest.raises(BackendError, match=r"'k'.*HTTP 400") as info:
        backend.generate([GenerationRequest("k", "hello")])
    assert info.value.key == "k"
    assert backend.last_attempts == {0: 1}


# --------------------------------------------------------------------------
# Scripted servers: concurrency, payload, failures
# --------------------------------------------------------------------------
def test_requests_in_flight_and_order():
    server = ScriptedServer(_echo)
    with server.running():
        backend = OpenAIBackend(
            base_url=server.base_url, model="m", max_concurrency=4, progress=False
        )
        requests = [GenerationRequest(f"k{i}", f"prompt {i}") for i in range(12)]
        start = time.perf_counter()
        texts = backend.generate(requests)
        elapsed = time.perf_counter() - start
    assert texts == [f"echo prompt {i}" for i in range(12)]
    assert server.max_in_flight == 4  # never more than asked, and really that many
    assert elapsed < 12 * 0.2  # overlapped, not one after another
    body = server.seen[0].body
    assert body["model"] == "m" and body["max_tokens"] == 160 and body["temperature"] == 0.0
    assert "seed" not in body and "top_p" not in body


def test_images_sent_as_data_urls(tmp_path):
    jpg = tmp_path / "photo.jpg"
    _noise(5).save(jpg, quality=80)
    gray = tmp_path / "gray.bmp"  # a format that is re-encoded
    Image.new("L", (10, 6), 77).save(gray)
    pil = _noise(6)
    server = ScriptedServer(lambda n, body: Reply(text="x"))
    with server.running():
        OpenAIBackend(base_url=server.base_url, model="m", progress=False).generate(
            [GenerationRequest("a", "describe", [jpg, pil, str(gray)])]
        )
    content = server.seen[0].body["messages"][0]["content"]
    assert [p["type"] for p in content] == ["image_url", "image_url", "image_url", "text"]
    urls = [p["image_url"]["url"] for p in content[:3]]
    assert urls[0] == "data:image/jpeg;base64," + base64.b64encode(jpg.read_bytes()).decode()
    assert urls[1].startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(urls[1].split(",", 1)[1])))
    assert decoded.tobytes() == pil.tobytes()  # lossless
    gray_back = Image.open(io.BytesIO(base64.b64decode(urls[2].split(",", 1)[1])))
    assert gray_back.size == (10, 6) and gray_back.convert("L").getpixel((3, 3)) == 77
    assert content[3] == {"type": "text", "text": "describe"}


def test_max_image_side_shrinks(tmp_path):
    big = tmp_path / "big.png"
    _noise(9, (300, 120)).save(big)
    server = ScriptedServer(lambda n, body: Reply(text="x"))
    with server.running():
        OpenAIBackend(base_url=server.base_url, model="m", max_image_side=100).generate(
            [GenerationRequest("a", "d", [big])]
        )
    url = server.seen[0].body["messages"][0]["content"][0]["image_url"]["url"]
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (100, 40)


def test_server_down_fails_after_bounded_retries():
    port = free_port()  # nothing listens here
    backend = OpenAIBackend(
        base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=2, timeout=2, **FAST
    )
    start = time.perf_counter()
    with pytest.raises(BackendError, match=r"'k'.*after 3 attempts.*connection failed") as info:
        backend.generate([GenerationRequest("k", "hello")])
    assert time.perf_counter() - start < 10
    assert info.value.key == "k"
    assert backend.last_attempts == {0: 3}


def test_slow_answer_times_out_and_is_retried():
    server = ScriptedServer(lambda n, body: Reply(text=f"answer {n}", delay=1.5 if n == 0 else 0))
    with server.running():
        backend = OpenAIBackend(base_url=server.base_url, model="m", timeout=0.4, **FAST)
        assert backend.generate([GenerationRequest("k", "hello")]) == ["answer 1"]
    assert backend.last_attempts == {0: 2}
    assert len(server.seen) == 2


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
def test_transient_errors_are_retried(status):
    script = {0: Reply(status=status), 1: Reply(status=status)}
    server = ScriptedServer(lambda n, body: script.get(n, Reply(text="fine")))
    with server.running():
        backend = OpenAIBackend(base_url=server.base_url, model="m", max_retries=3, **FAST)
        assert backend.generate([GenerationRequest("k", "hello")]) == ["fine"]
    assert backend.last_attempts == {0: 3}
    assert len(server.seen) == 3


def test_retries_are_bounded():
    server = ScriptedServer(lambda n, body: Reply(status=503))
    with server.running():
        backend = OpenAIBackend(base_url=server.base_url, model="m", max_retries=2, **FAST)
        with pytest.raises(BackendError, match=r"after 3 attempts: HTTP 503"):
            backend.generate([GenerationRequest("k", "hello")])
    assert len(server.seen) == 3


def test_retry_after_header_is_honoured():
    script = {0: Reply(status=429, headers={"Retry-After": "0.6"})}
    server = ScriptedServer(lambda n, body: script.get(n, Reply(text="fine")))
    with server.running():
        backend = OpenAIBackend(
            base_url=server.base_url, model="m", backoff_initial=0.01, backoff_max=5
        )
        start = time.perf_counter()
        assert backend.generate([GenerationRequest("k", "hello")]) == ["fine"]
        assert time.perf_counter() - start >= 0.6


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_errors_are_not_retried(status):
    server = ScriptedServer(lambda n, body: Reply(status=status))
    with server.running():
        backend = OpenAIBackend(base_url=server.base_url, model="m", max_retries=5, **FAST)
        with pytest.raises(BackendError, match=rf"'bad'.*HTTP {status}"):
            backend.generate([GenerationRequest("bad", "hello")])
    assert len(server.seen) == 1


def test_failure_keeps_finished_work():
    def script(n: int, body: dict) -> Reply:
        prompt = _prompt_of(body)
        if prompt == "poison":
            return Reply(status=400, delay=0.1)
        return Reply(text=f"done {prompt}", delay=0.3)

    server = ScriptedServer(script)
    with server.running():
        backend = OpenAIBackend(base_url=server.base_url, model="m", max_concurrency=3, **FAST)
        requests = [GenerationRequest("a", "one"), GenerationRequest("b", "poison")]
        requests += [GenerationRequest(f"z{i}", f"later {i}") for i in range(20)]
        with pytest.raises(BackendError) as info:
            backend.generate(requests)
    err = info.value
    assert err.key == "b"
    assert err.partial[0] == "done one" and 1 not in err.partial
    assert all(err.partial[i] == f"done {requests[i].prompt}" for i in err.partial)
    assert len(server.seen) < len(requests)  # the rest was cancelled, not sent


def test_api_key_from_env_never_logged(monkeypatch, caplog):
    secret = "sk-test-0123456789-secret"
    monkeypatch.setenv("MLLMREC_TEST_KEY", secret)
    script = {0: Reply(status=500)}
    server = ScriptedServer(lambda n, body: script.get(n, Reply(text="fine")))
    caplog.set_level(logging.DEBUG)
    with server.running():
        backend = OpenAIBackend(
            base_url=server.base_url, model="m", api_key_env="MLLMREC_TEST_KEY", **FAST
        )
        assert backend.generate([GenerationRequest("k", "hello")]) == ["fine"]
    assert {s.headers["authorization"] for s in server.seen} == {f"Bearer {secret}"}
    assert "retry 1/5" in caplog.text  # the retry was logged ...
    assert secret not in caplog.text  # ... without the key
    assert secret not in repr(backend) and secret not in repr(backend.config)
    assert secret not in json.dumps(backend.fingerprint())

    monkeypatch.delenv("MLLMREC_TEST_KEY")
    server = ScriptedServer(lambda n, body: Reply(text="fine"))
    with server.running():
        OpenAIBackend(base_url=server.base_url, model="m", api_key_env="MLLMREC_TEST_KEY").generate(
            [GenerationRequest("k", "hello")]
        )
    assert server.seen[0].headers["authorization"] == "Bearer not-needed"


def test_sampling_settings_and_system_prompt_are_sent():
    server = ScriptedServer(lambda n, body: Reply(text="x"))
    with server.running():
        OpenAIBackend(
            base_url=server.base_url,
            model="gemma3:27b",
            temperature=0.7,
            top_p=0.9,
            seed=3,
            max_new_tokens=42,
            system_prompt="be brief",
        ).generate([GenerationRequest("k", "hello")])
    body = server.seen[0].body
    assert (
        body["model"],
        body["temperature"],
        body["top_p"],
        body["seed"],
        body["max_tokens"],
    ) == (
        "gemma3:27b",
        0.7,
        0.9,
        3,
        42,
    )
    assert body["messages"][0] == {"role": "system", "content": "be brief"}


def test_fingerprint_config_and_factory():
    b = get_backend(
        "openai", model="gemma3:27b", base_url="http://127.0.0.1:1/v1", max_concurrency=2
    )
    assert isinstance(b, OpenAIBackend) and isinstance(b, Backend)
    assert b.parallelism == 2
    fp = b.fingerprint()
    assert fp["backend"] == "openai" and fp["model"] == "gemma3:27b"
    # where it is served and how fast do not change the text
    assert (
        fp
        == OpenAIBackend(
            model="gemma3:27b", base_url="http://h:2/v1", max_concurrency=9
        ).fingerprint()
    )
    assert fp != OpenAIBackend(model="gemma3:27b", max_new_tokens=10).fingerprint()
    assert fp != OpenAIBackend(model="gemma3:12b").fingerprint()
    assert OpenAIBackendConfig().api_key_env == "OPENAI_API_KEY"
    with pytest.raises(ValueError, match="max_concurrency=0"):
        OpenAIBackend(max_concurrency=0)
    with pytest.raises(TypeError, match="no setting.*api_key"):
        OpenAIBackend(api_key="sk-in-code")  # keys come from the environment only
    assert OpenAIBackend().generate([]) == []
    with pytest.raises(BackendInputError, match="not a single one"):
        OpenAIBackend().generate(GenerationRequest("k", "p"))


def test_bad_image_named_before_sending(tmp_path):
    server = ScriptedServer(lambda n, body: Reply(text="x"))
    with server.running():
        backend = OpenAIBackend(base_url=server.base_url, model="m", **FAST)
        with pytest.raises(BackendInputError, match=r"'item-3'.*missing\.png"):
            backend.generate([GenerationRequest("item-3", "d", [tmp_path / "missing.png"])])
    assert server.seen == []


def test_missing_openai_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'mllmrec-pyg\[serve\]'"):
        OpenAIBackend(max_retries=0).generate([GenerationRequest("k", "p")])
