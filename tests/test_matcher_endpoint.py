"""The endpoint teacher and judge against a real OpenAI-compatible HTTP server on loopback.

The server (``fake_openai.py``) is a ``http.server`` in a thread answering ``POST /v1/chat/completions``
from scripts: each test names what the server does for a listing (answer, fail with
500/429, hang past the client timeout, send HTML, send text that is not a decision).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fake_openai import DECISION, OK, USAGE, chat_response, endpoint_settings, server  # noqa: F401

from epm_spark.config import Settings, from_dict
from epm_spark.errors import ConfigError
from epm_spark.models.matcher.decision import parse_decision
from epm_spark.models.matcher.supervision.endpoint import ChatEndpoint, EndpointError
from epm_spark.models.matcher.supervision.judges import EndpointJudge, build_judge
from epm_spark.models.matcher.supervision.prompts import DECISION_SYSTEM, JUDGE_SYSTEM
from epm_spark.models.matcher.supervision.settings import EndpointSettings, TeacherSettings
from epm_spark.models.matcher.supervision.teacher import EndpointTeacher, build_teacher


def settings(server, tmp_path, **changes) -> EndpointSettings:
    return endpoint_settings(server, tmp_path, **changes)


def pairs(*titles: str) -> pd.DataFrame:
    return pd.DataFrame([{"left_id": str(i), "right_id": str(i), "left_source": "a", "right_source": "b",
                          "left_title": t, "right_title": f"{t} other", "label": 0} for i, t in enumerate(titles)])


def test_success_with_accounting_and_auth(server, tmp_path, monkeypatch):
    monkeypatch.setenv("EPM_TEST_KEY", "sk-test")
    endpoint = ChatEndpoint(settings(server, tmp_path))
    [result] = EndpointTeacher(endpoint).decide(pairs("Samsung 870 EVO 1TB"))
    assert result.ok and result.decision == parse_decision(json.dumps(DECISION))
    assert result.teacher == "endpoint:fake-model"
    assert (result.prompt_tokens, result.completion_tokens, result.cached) == (100, 20, False)
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "fake-model" and body["messages"][0]["content"] == DECISION_SYSTEM
    assert "Listing A: Samsung 870 EVO 1TB" in body["messages"][1]["content"]
    usage = endpoint.usage
    assert (usage.requests, usage.prompt_tokens, usage.completion_tokens) == (1, 100, 20)
    assert usage.cost == pytest.approx(100 / 1000 * 0.5 + 20 / 1000 * 2.0)


def test_cache_hit_sends_no_second_request(server, tmp_path):
    frame = pairs("Sony DSC-W120")
    first = EndpointTeacher(ChatEndpoint(settings(server, tmp_path))).decide(frame)
    again_endpoint = ChatEndpoint(settings(server, tmp_path))
    second = EndpointTeacher(again_endpoint).decide(frame)
    assert len(server.requests) == 1
    assert second[0].cached and second[0].decision == first[0].decision
    assert again_endpoint.usage.cache_hits == 1 and again_endpoint.usage.cost == 0.0
    # Another model (or other parameters) is another cache key.
    EndpointTeacher(ChatEndpoint(settings(server, tmp_path, model="other"))).decide(frame)
    assert len(server.requests) == 2


def test_cache_can_be_turned_off(server, tmp_path):
    endpoint = ChatEndpoint(settings(server, tmp_path, cache=False))
    EndpointTeacher(endpoint).decide(pairs("x1"))
    EndpointTeacher(endpoint).decide(pairs("x1"))
    assert len(server.requests) == 2 and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("failure", [
    ("json", 500, {"error": {"message": "overloaded"}}),
    ("json", 503, {"error": "warming up"}),
    ("json", 429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"}),
])
def test_retry_after_server_errors_and_rate_limits(server, tmp_path, failure):
    server.scripts["flaky"] = [failure, failure, OK]
    endpoint = ChatEndpoint(settings(server, tmp_path))
    [result] = EndpointTeacher(endpoint).decide(pairs("flaky item"))
    assert result.ok
    assert len(server.requests) == 3 and endpoint.usage.retries == 2
    # Only the answered request is billed.
    assert endpoint.usage.prompt_tokens == 100


def test_back_off_grows_and_honours_retry_after(server, tmp_path):
    server.scripts["slow down"] = [("json", 429, {}, {"Retry-After": "0.04"}), ("json", 500, {}),
                                   ("json", 500, {}), OK]
    delays = []
    endpoint = ChatEndpoint(settings(server, tmp_path, backoff_s=0.01, backoff_max_s=1.0), sleep=delays.append)
    assert endpoint.complete([{"role": "user", "content": "slow down"}]).text
    assert delays[0] >= 0.04  # Retry-After
    assert 0.005 <= delays[1] <= 0.02 and 0.01 <= delays[2] <= 0.04  # backoff_s * 2**attempt, jittered


def test_requests_exhausting_retries_are_failures_not_defaults(server, tmp_path):
    server.scripts["down"] = [("json", 500, {"error": "down"})]
    endpoint = ChatEndpoint(settings(server, tmp_path, max_retries=2))
    [result] = EndpointTeacher(endpoint).decide(pairs("down item"))
    assert not result.ok and result.decision is None
    assert result.failure == "request failed: HTTP 500: down"
    assert len(server.requests) == 3 and endpoint.usage.failures == 1


def test_timeout_is_retried(server, tmp_path):
    server.scripts["hang once"] = [("sleep", 1.0, OK), OK]
    endpoint = ChatEndpoint(settings(server, tmp_path, timeout_s=0.3))
    [result] = EndpointTeacher(endpoint).decide(pairs("hang once"))
    assert result.ok and endpoint.usage.retries == 1


def test_timeout_every_time_fails_with_the_reason(server, tmp_path):
    server.scripts["hang"] = [("sleep", 1.0, OK)]
    endpoint = ChatEndpoint(settings(server, tmp_path, timeout_s=0.2, max_retries=1))
    [result] = EndpointTeacher(endpoint).decide(pairs("hang"))
    assert result.failure == "request failed: timed out after 0.2 s"


def test_non_json_body_is_retried_then_reported(server, tmp_path):
    server.scripts["gateway"] = [("raw", 200, b"<html>Bad gateway</html>")]
    endpoint = ChatEndpoint(settings(server, tmp_path, max_retries=1))
    [result] = EndpointTeacher(endpoint).decide(pairs("gateway page"))
    assert result.failure.startswith("request failed: non-JSON response")
    server.scripts["proxy hiccup"] = [("raw", 200, b"<html/>"), OK]
    [result] = EndpointTeacher(endpoint).decide(pairs("proxy hiccup"))
    assert result.ok


def test_response_without_choices_is_a_failure(server, tmp_path):
    server.scripts["empty"] = [("json", 200, {"choices": [], "usage": USAGE})]
    [result] = EndpointTeacher(ChatEndpoint(settings(server, tmp_path))).decide(pairs("empty"))
    assert result.failure == "request failed: response has no choices[0].message.content"


def test_answer_failing_the_schema_is_retried_once_with_the_reason(server, tmp_path):
    server.scripts["chatty"] = [("json", 200, chat_response("I believe these match.")), OK]
    endpoint = ChatEndpoint(settings(server, tmp_path))
    [result] = EndpointTeacher(endpoint).decide(pairs("chatty"))
    assert result.ok
    repair = server.requests[1]["body"]["messages"]
    assert repair[-2] == {"role": "assistant", "content": "I believe these match."}
    assert "text before the JSON object" in repair[-1]["content"]
    # Both answers were billed and are reported on the pair.
    assert (result.prompt_tokens, result.completion_tokens) == (200, 40)


def test_answer_failing_twice_is_a_format_failure(server, tmp_path):
    wrong = dict(DECISION, label="yes")
    server.scripts["stubborn"] = [("json", 200, chat_response(json.dumps(wrong)))]
    endpoint = ChatEndpoint(settings(server, tmp_path))
    [result] = EndpointTeacher(endpoint).decide(pairs("stubborn"))
    assert result.decision is None
    assert result.failure == "format: label must be 'match' or 'no_match', got 'yes'"
    assert result.raw == json.dumps(wrong) and len(server.requests) == 2


def test_truncated_answer_is_a_format_failure_when_retries_are_off(server, tmp_path):
    server.scripts["cut"] = [("json", 200, chat_response(json.dumps(DECISION)[:30]))]
    teacher = EndpointTeacher(ChatEndpoint(settings(server, tmp_path)), format_retries=0)
    [result] = teacher.decide(pairs("cut off"))
    assert result.failure == "format: truncated JSON" and len(server.requests) == 1


def test_batch_keeps_order_and_bounds_concurrency(server, tmp_path):
    for i in range(6):
        label = "match" if i % 2 else "no_match"
        answer = chat_response(json.dumps(dict(DECISION, label=label)))
        server.scripts[f"item{i} "] = [("sleep", 0.15, ("json", 200, answer))]
    endpoint = ChatEndpoint(settings(server, tmp_path, max_concurrency=2))
    results = EndpointTeacher(endpoint).decide(pairs(*[f"item{i} thing" for i in range(6)]))
    assert [r.label for r in results] == ["no_match", "match"] * 3
    assert server.max_in_flight == 2


def test_wrong_key_stops_the_job(server, tmp_path):
    server.scripts["auth"] = [("json", 401, {"error": {"message": "invalid api key"}})]
    with pytest.raises(EndpointError, match="HTTP 401: invalid api key"):
        EndpointTeacher(ChatEndpoint(settings(server, tmp_path))).decide(pairs("auth"))
    assert len(server.requests) == 1


def test_a_fatal_answer_stops_the_queued_requests(server, tmp_path):
    server.scripts["auth"] = [("sleep", 0.1, ("json", 401, {"error": {"message": "invalid api key"}}))]
    teacher = EndpointTeacher(ChatEndpoint(settings(server, tmp_path, max_concurrency=2)))
    with pytest.raises(EndpointError, match="HTTP 401: invalid api key"):
        teacher.decide(pairs(*[f"auth item{i}" for i in range(12)]))
    # Only the requests already in flight when the first 401 came back were sent.
    assert len(server.requests) <= 2


def test_unconfigured_endpoint_is_a_clear_error():
    with pytest.raises(EndpointError, match="no chat endpoint configured"):
        ChatEndpoint(EndpointSettings())
    with pytest.raises(ConfigError, match="base_url must start with http"):
        EndpointSettings(base_url="localhost:8000")


def test_json_mode_asks_for_a_json_object(server, tmp_path):
    endpoint = ChatEndpoint(settings(server, tmp_path, json_mode=True, cache=False))
    endpoint.complete([{"role": "user", "content": "x"}])
    assert server.requests[0]["body"]["response_format"] == {"type": "json_object"}


def test_build_teacher_from_settings(server, tmp_path):
    teacher_settings = TeacherSettings(kind="endpoint", endpoint=settings(server, tmp_path), format_retries=0)
    teacher = build_teacher("endpoint", teacher_settings)
    assert isinstance(teacher, EndpointTeacher) and teacher.format_retries == 0


# ----------------------------------------------------------------------------- endpoint judge


def judge_answer(score) -> tuple:
    return ("json", 200, chat_response(json.dumps({"score": score, "reason": "checked"})))


def test_endpoint_judge_scores_with_the_rubric(server, tmp_path):
    server.scripts["Samsung"] = [judge_answer(0.25)]
    endpoint = ChatEndpoint(settings(server, tmp_path))
    judge = EndpointJudge(endpoint)
    decision = parse_decision(json.dumps(DECISION))
    assert judge.score([decision], [{"title": "Samsung 1TB"}], [{"title": "Samsung 2TB"}]) == [0.25]
    body = server.requests[0]["body"]
    assert body["messages"][0]["content"] == JUDGE_SYSTEM
    assert decision.to_json() in body["messages"][1]["content"]
    assert endpoint.usage.prompt_tokens == 100


def test_endpoint_judge_retries_bad_answers_then_gives_none(server, tmp_path):
    server.scripts["fixable"] = [("json", 200, chat_response("8/10")), judge_answer(0.8)]
    server.scripts["hopeless"] = [judge_answer(7)]
    server.scripts["offline"] = [("json", 500, {})]
    judge = EndpointJudge(ChatEndpoint(settings(server, tmp_path, max_retries=0)))
    decision = parse_decision(json.dumps(DECISION))
    scores = judge.score([decision] * 3, [{"title": t} for t in ("fixable", "hopeless", "offline")],
                         [{"title": "b"}] * 3)
    assert scores == [0.8, None, None]
    assert judge.failures == 2


def test_endpoint_judge_uses_the_teacher_endpoint_unless_it_has_its_own(server, tmp_path):
    conf = {"teacher": {"endpoint": {"base_url": server.base_url, "model": "teacher-model",
                                     "cache_dir": str(tmp_path)}},
            "judges": {"kind": "endpoint"}}
    judge = build_judge(from_dict(Settings, conf))
    assert isinstance(judge, EndpointJudge) and judge.endpoint.settings.model == "teacher-model"
    conf["judges"]["endpoint"] = {"base_url": server.base_url, "model": "judge-model"}
    assert build_judge(from_dict(Settings, conf)).endpoint.settings.model == "judge-model"
    with pytest.raises(ConfigError, match="neither judges.endpoint nor teacher.endpoint"):
        build_judge(from_dict(Settings, {"judges": {"kind": "endpoint"}}))
