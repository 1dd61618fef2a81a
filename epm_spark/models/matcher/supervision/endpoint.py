"""One client for OpenAI-compatible chat endpoints, shared by the endpoint teacher and judge.

``POST {base_url}/chat/completions`` with the standard body; what a vLLM server and the
hosted APIs all accept. On top of the request itself:

* **bounded concurrency**: :meth:`ChatEndpoint.complete_many` keeps at most
  ``max_concurrency`` requests in flight (a thread pool; the work is waiting on I/O);
* **retries** with exponential back-off (``backoff_s * 2**attempt``, capped at
  ``backoff_max_s``, jittered, ``Retry-After`` honoured) on 429, 5xx, timeouts,
  dropped connections and bodies that are not JSON; 401/403/404 stop the job with
  :class:`EndpointError` (a wrong key or URL will not fix itself): once one request
  gets it, no queued request is sent; other 4xx fail that request only;
* an **on-disk cache** keyed by the SHA-256 of the request body (model, messages,
  parameters): re-running a job sends nothing already answered;
* **token and cost accounting** from each response's ``usage``, priced per 1000
  prompt and completion tokens from the settings (cache hits cost nothing).

Standard library HTTP (``urllib``): the protocol is one JSON POST, and the retry,
cache and accounting rules above are ours either way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from epm_spark.errors import EnvironmentProblem
from epm_spark.models.matcher.supervision.settings import EndpointSettings
from epm_spark.progress import progress

__all__ = ["ChatEndpoint", "ChatAnswer", "ParsedAnswer", "EndpointUsage", "EndpointError", "Messages"]

log = logging.getLogger(__name__)

Messages = list[dict[str, Any]]

_RETRY_STATUS = {408, 409, 425, 429}
_FATAL_STATUS = {401, 403, 404}


class EndpointError(EnvironmentProblem):
    """The endpoint refuses every request (wrong key, URL or model): retrying cannot help."""


@dataclass(frozen=True)
class ChatAnswer:
    """One conversation's answer: the assistant text, or the error after the last retry."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    attempts: int = 0
    error: str | None = None


@dataclass(frozen=True)
class ParsedAnswer:
    """One conversation's answer read by a parser: the value, or why there is none (after the repairs)."""

    value: Any
    text: str | None  # the last answer's raw text
    failure: str | None = None  # "request failed: ..." or "format: ..."
    prompt_tokens: int = 0  # over every attempt
    completion_tokens: int = 0
    cached: bool = False  # every attempt came from the cache

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass
class EndpointUsage:
    """What a :class:`ChatEndpoint` has spent so far."""

    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    cache_hits: int = 0
    failures: int = 0  # conversations that got no answer after every retry
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cost": round(self.cost, 6)}


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Failed(Exception):
    pass


class ChatEndpoint:
    """An OpenAI-compatible ``/chat/completions`` endpoint with retries, cache and accounting."""

    def __init__(self, settings: EndpointSettings, *, api_key: str | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        if not settings.configured:
            raise EndpointError("no chat endpoint configured: set teacher.endpoint.base_url and teacher.endpoint.model "
                                "(e.g. --set teacher.endpoint.base_url=http://localhost:8000/v1)")
        self.settings = settings
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key if api_key is not None else settings.api_key()
        self._sleep = sleep
        self._lock = threading.Lock()
        # Set by the first 401/403/404: every later request would get the same answer.
        self._fatal: EndpointError | None = None
        self.usage = EndpointUsage()
        if settings.cache:
            from epm_spark.models.weights import cache_dir

            self.cache_dir: Path | None = Path(settings.cache_dir) if settings.cache_dir else cache_dir() / "endpoint"
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.cache_dir = None

    # ------------------------------------------------------------------ request body and cache

    def request_body(self, messages: Messages) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {"model": s.model, "messages": messages, "temperature": s.temperature,
                                "max_tokens": s.max_tokens}
        if s.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    @staticmethod
    def cache_key(body: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    def _cache_read(self, key: str) -> dict[str, Any] | None:
        path = self._cache_path(key)
        if path is None or not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("ignoring unreadable cache entry %s", path)
            return None

    def _cache_write(self, key: str, response: dict[str, Any]) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a job killed mid-write leaves no half file behind.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(response, f, ensure_ascii=False)
        os.replace(tmp, path)

    # ------------------------------------------------------------------ one request

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            if exc.code in _FATAL_STATUS:
                raise EndpointError(f"{self.url} answered HTTP {exc.code}: {detail}") from None
            if exc.code in _RETRY_STATUS or exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code}: {detail}", _retry_after(exc)) from None
            raise _Failed(f"HTTP {exc.code}: {detail}") from None
        except (TimeoutError, socket.timeout):
            raise _Retryable(f"timed out after {self.settings.timeout_s:g} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise _Retryable(f"timed out after {self.settings.timeout_s:g} s") from None
            raise _Retryable(f"connection failed: {exc.reason}") from None
        except (ConnectionError, OSError) as exc:
            raise _Retryable(f"connection failed: {exc}") from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise _Retryable(f"non-JSON response: {raw[:80]!r}") from None
        if not isinstance(data, dict):
            raise _Retryable("response is not a JSON object")
        return data

    def complete(self, messages: Messages) -> ChatAnswer:
        """Answer one conversation: from the cache, or by asking (with retries)."""
        body = self.request_body(messages)
        key = self.cache_key(body)
        cached = self._cache_read(key)
        if cached is not None:
            with self._lock:
                self.usage.cache_hits += 1
            return _answer(cached, cached=True, attempts=0)
        s = self.settings
        attempt = 0
        while True:
            with self._lock:
                if self._fatal is not None:
                    raise EndpointError(str(self._fatal))
                self.usage.requests += 1
            try:
                response = self._post(body)
                answer = _answer(response, cached=False, attempts=attempt + 1)
            except EndpointError as exc:
                with self._lock:
                    self._fatal = self._fatal or exc
                raise
            except _Retryable as exc:
                if attempt >= s.max_retries:
                    return self._failed(exc.reason, attempt + 1)
                delay = min(s.backoff_max_s, s.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)
                if exc.retry_after is not None:
                    delay = min(s.backoff_max_s, max(delay, exc.retry_after))
                log.debug("endpoint: %s; retry %d in %.2f s", exc.reason, attempt + 1, delay)
                with self._lock:
                    self.usage.retries += 1
                self._sleep(delay)
                attempt += 1
                continue
            except _Failed as exc:
                return self._failed(str(exc), attempt + 1)
            with self._lock:
                self.usage.prompt_tokens += answer.prompt_tokens
                self.usage.completion_tokens += answer.completion_tokens
                self.usage.cost += (answer.prompt_tokens * s.price_prompt_per_1k
                                    + answer.completion_tokens * s.price_completion_per_1k) / 1000.0
            if answer.error is None:
                self._cache_write(key, response)
            else:
                with self._lock:
                    self.usage.failures += 1
            return answer

    def _failed(self, reason: str, attempts: int) -> ChatAnswer:
        with self._lock:
            self.usage.failures += 1
        return ChatAnswer(None, attempts=attempts, error=reason)

    def complete_many(self, conversations: Sequence[Messages], desc: str = "endpoint") -> list[ChatAnswer]:
        """Answer many conversations, ``max_concurrency`` at a time, in input order."""
        if not conversations:
            return []
        with ThreadPoolExecutor(max_workers=self.settings.max_concurrency) as pool:
            futures = [pool.submit(self.complete, c) for c in conversations]
            try:
                for _ in progress((f.result() for f in futures), total=len(futures), desc=desc, unit="request"):
                    pass
            except BaseException:
                # Leaving the pool would otherwise wait for every queued conversation to run.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            return [f.result() for f in futures]

    def complete_parsed(self, conversations: Sequence[Messages], parse: Callable[[str], Any],
                        repair: Callable[[str], dict[str, Any]], *, format_retries: int = 1,
                        desc: str = "endpoint") -> list[ParsedAnswer]:
        """Answer many conversations and read each answer with ``parse`` (which raises ``ValueError``
        with the reason). An answer that fails is asked again, up to ``format_retries`` times, with the
        assistant's answer and ``repair(reason)`` appended; a request that fails after its retries is
        not. Never a silent default: a conversation without a value says why."""
        conversations = [list(c) for c in conversations]
        results: list[ParsedAnswer | None] = [None] * len(conversations)
        tokens = {i: [0, 0, True] for i in range(len(conversations))}
        pending = list(range(len(conversations)))
        for attempt in range(format_retries + 1):
            if not pending:
                break
            retry = []
            for i, answer in zip(pending, self.complete_many([conversations[i] for i in pending], desc=desc)):
                tokens[i][0] += answer.prompt_tokens
                tokens[i][1] += answer.completion_tokens
                tokens[i][2] = tokens[i][2] and answer.cached
                if answer.error:
                    results[i] = ParsedAnswer(None, answer.text, f"request failed: {answer.error}", *tokens[i])
                    continue
                try:
                    results[i] = ParsedAnswer(parse(answer.text or ""), answer.text, None, *tokens[i])
                except ValueError as exc:
                    results[i] = ParsedAnswer(None, answer.text, f"format: {exc}", *tokens[i])
                    if attempt < format_retries:
                        conversations[i] = [*conversations[i], {"role": "assistant", "content": answer.text or ""},
                                            repair(str(exc))]
                        retry.append(i)
            pending = retry
        return [r for r in results if r is not None]


def _answer(response: dict[str, Any], *, cached: bool, attempts: int) -> ChatAnswer:
    usage = response.get("usage") or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ChatAnswer(None, prompt, completion, cached, attempts, "response has no choices[0].message.content")
    if not isinstance(content, str):
        return ChatAnswer(None, prompt, completion, cached, attempts, "response message has no text content")
    return ChatAnswer(content, prompt, completion, cached, attempts)


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read().decode("utf-8", "replace")
    except OSError:
        return exc.reason or ""
    try:
        message = json.loads(body).get("error", {})
        message = message.get("message") if isinstance(message, dict) else message
        return str(message or body)[:200]
    except (ValueError, AttributeError):
        return body[:200] or str(exc.reason)


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
