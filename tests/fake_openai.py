"""A real OpenAI-compatible HTTP server on loopback for the endpoint tests (teachers and judges).

A ``http.server`` in a thread answers ``POST /v1/chat/completions`` from scripts: each test
names what the server does for a word of the first user message (answer, fail with 500/429,
hang past the client timeout, send HTML, send text that is not an answer).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

DECISION = {"label": "no_match", "confidence": 0.8, "evidence": {"capacity": "different"},
            "noise_ignored": [], "rationale": "Different capacity (1 TB vs 2 TB)."}
USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}


def chat_response(content: str, usage=USAGE) -> dict:
    return {"id": "x", "object": "chat.completion", "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage}


OK = ("json", 200, chat_response(json.dumps(DECISION)))


class FakeOpenAI(ThreadingHTTPServer):
    """Answers each conversation from the script of the first scripted word found in its first user turn."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.scripts: dict[str, list] = {}
        self.seen: dict[str, int] = defaultdict(int)
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def next_step(self, body: dict):
        text = body["messages"][-1]["content"] if body["messages"][-1]["role"] == "user" else ""
        first_user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        key = next((k for k in self.scripts if k in first_user), None)
        if key is None:
            return ("json", 200, chat_response(json.dumps(DECISION)))
        with self.lock:
            n = self.seen[key]
            self.seen[key] += 1
        script = self.scripts[key]
        step = script[min(n, len(script) - 1)]
        return step(text) if callable(step) else step


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
            self.server.in_flight += 1
            self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)
        try:
            step = self.server.next_step(body)
            if step[0] == "sleep":
                time.sleep(step[1])
                step = step[2]
        finally:
            # The request stops counting once its answer is ready, before the answer is written:
            # the client may send its next request the moment it reads this one's.
            with self.server.lock:
                self.server.in_flight -= 1
        try:
            if step[0] == "json":
                self._send(step[1], json.dumps(step[2]).encode(), "application/json", step[3] if len(step) > 3 else {})
            elif step[0] == "raw":
                self._send(step[1], step[2], "text/html", {})
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, status: int, payload: bytes, ctype: str, headers: dict):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def server():
    srv = FakeOpenAI()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()




def endpoint_settings(server, tmp_path, **changes):
    """Client settings for ``server``: fast retries, a cache in ``tmp_path``, prices to account."""
    from epm_spark.models.matcher.supervision.settings import EndpointSettings

    values = dict(base_url=server.base_url, model="fake-model", api_key_env="EPM_TEST_KEY", timeout_s=2.0,
                  max_concurrency=2, max_retries=3, backoff_s=0.01, backoff_max_s=0.05,
                  price_prompt_per_1k=0.5, price_completion_per_1k=2.0, cache_dir=str(tmp_path / "cache"))
    values.update(changes)
    return EndpointSettings(**values)
