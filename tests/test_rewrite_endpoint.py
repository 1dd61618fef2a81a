"""The endpoint rewrite teacher and judge against the loopback OpenAI-compatible server."""

from __future__ import annotations

import json

import pytest
from fake_openai import chat_response, endpoint_settings, server  # noqa: F401

from epm_spark.config import Settings, from_dict
from epm_spark.errors import ConfigError
from epm_spark.models.matcher.supervision.endpoint import ChatEndpoint, EndpointError
from epm_spark.models.rewriter.rewards import EndpointRewriteJudge, JudgeRewriteReward
from epm_spark.models.rewriter.settings import TEACHER_REWRITE_SYSTEM
from epm_spark.models.rewriter.teacher import EndpointRewriter, build_rewrite_teacher


def answer(text: str) -> tuple:
    return ("json", 200, chat_response(text))


def test_rewrites_with_accounting_cache_and_the_teacher_prompt(server, tmp_path):
    server.scripts["smasung"] = [answer("samsung 870 evo 1tb ssd")]
    server.scripts["pslx350h"] = [answer('Rewritten query: "Sony PS-LX350H turntable".')]
    endpoint = ChatEndpoint(endpoint_settings(server, tmp_path))
    results = EndpointRewriter(endpoint).rewrite(["smasung 870 evo 1tb", "PSLX350H"])
    assert [r.rewrite for r in results] == ["samsung 870 evo 1tb ssd", "sony ps-lx350h turntable"]
    assert [r.query for r in results] == ["smasung 870 evo 1tb", "pslx350h"]
    assert all(r.teacher == "endpoint:fake-model" and r.prompt_tokens == 100 for r in results)
    body = server.requests[0]["body"]
    assert body["messages"][0] == {"role": "system", "content": TEACHER_REWRITE_SYSTEM}
    assert endpoint.usage.cost == pytest.approx(2 * (100 / 1000 * 0.5 + 20 / 1000 * 2.0))
    again = ChatEndpoint(endpoint_settings(server, tmp_path))
    assert [r.cached for r in EndpointRewriter(again).rewrite(["smasung 870 evo 1tb"])] == [True]
    assert len(server.requests) == 2 and again.usage.cost == 0.0


def test_empty_answer_is_asked_again_then_recorded_as_a_failure(server, tmp_path):
    server.scripts["fixable"] = [answer("   "), answer("fixable query")]
    server.scripts["hopeless"] = [answer('""')]
    server.scripts["down"] = [("json", 500, {"error": "down"})]
    endpoint = ChatEndpoint(endpoint_settings(server, tmp_path, max_retries=1))
    results = EndpointRewriter(endpoint).rewrite(["fixable", "hopeless", "down"])
    assert results[0].rewrite == "fixable query" and results[0].prompt_tokens == 200
    assert results[1].rewrite is None and results[1].failure == "format: the answer holds no query"
    assert results[2].rewrite is None and results[2].failure == "request failed: HTTP 500: down"
    repair = next(r["body"]["messages"] for r in server.requests if len(r["body"]["messages"]) == 4)
    assert "could not be used (the answer holds no query)" in repair[-1]["content"]


def test_wrong_key_stops_the_teacher(server, tmp_path):
    server.scripts["auth"] = [("json", 401, {"error": {"message": "invalid api key"}})]
    with pytest.raises(EndpointError, match="HTTP 401"):
        EndpointRewriter(ChatEndpoint(endpoint_settings(server, tmp_path))).rewrite(["auth"])


def test_endpoint_judge_reward(server, tmp_path):
    server.scripts["good"] = [answer(json.dumps({"score": 0.9, "reason": "keeps the model"}))]
    server.scripts["bad"] = [answer("7/10"), answer("still no json")]
    reward = JudgeRewriteReward(EndpointRewriteJudge(ChatEndpoint(endpoint_settings(server, tmp_path))))
    scores = reward(None, ["good rewrite", "bad rewrite", ""], query=["good", "bad", "empty"])
    assert scores == [0.9, None, 0.0]
    assert reward.judge.failures == 1
    assert any(r["body"]["messages"][1]["content"] == "Query: good\nRewrite: good rewrite" for r in server.requests)


def test_build_the_endpoint_teacher_from_settings(server, tmp_path):
    conf = from_dict(Settings, {"teacher": {"endpoint": {"base_url": server.base_url, "model": "m",
                                                         "cache_dir": str(tmp_path)}}})
    teacher = build_rewrite_teacher("endpoint", settings=conf.teacher)
    assert isinstance(teacher, EndpointRewriter) and teacher.name == "endpoint:m"
    with pytest.raises(ConfigError, match="teacher.endpoint.base_url"):
        build_rewrite_teacher("endpoint", settings=from_dict(Settings, {}).teacher)
    with pytest.raises(ConfigError, match="needs the catalog's vocabulary"):
        build_rewrite_teacher("agentic")
