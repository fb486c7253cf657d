"""The HTTP application in-process (Starlette's TestClient): every route, the answers equal
to the pipelines', and every bad request a JSON 4xx after which the server goes on."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from seqgen.serving.app import create_app
from seqgen.serving.limits import Limits
from seqgen.serving.models import load_models

SENTENCES = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau liest."]


@pytest.fixture(scope="module")
def models():
    return load_models(
        ["multi30k-de-en", "sentiment", "shakespeare-char"], device="cpu", backend="auto"
    )


@pytest.fixture(scope="module")
def client(models):
    with TestClient(create_app(models, Limits(max_texts=8, max_body_bytes=2000))) as client:
        yield client


def by_name(models, name):
    return next(model for model in models if model.name == name)


def test_health_and_models(client):
    assert client.get("/health").json()["status"] == "ok"
    listed = {model["name"]: model for model in client.get("/models").json()["models"]}
    assert listed["multi30k-de-en"]["task"] == "translation"
    assert listed["multi30k-de-en"]["endpoint"] == "/translate"
    # a bundled model is served from its bundle, on ONNX Runtime
    assert listed["multi30k-de-en"]["format"] == "bundle"
    assert listed["multi30k-de-en"]["runtime"] == "onnxruntime"
    assert listed["multi30k-de-en"]["defaults"]["beam_size"] == 5
    assert "batch_size" not in listed["multi30k-de-en"]["defaults"]  # the server's to set
    assert listed["sentiment"]["labels"] == ["negative", "positive"]


def test_translate_answers_what_the_pipeline_does(client, models):
    translator = by_name(models, "multi30k-de-en").pipeline
    answer = client.post("/translate", json={"text": SENTENCES, "beam_size": 3}).json()
    assert answer == {"translations": translator.translate(SENTENCES, beam_size=3)}
    one = client.post("/translate", json={"text": SENTENCES[1]}).json()
    assert one["translations"] == translator.translate(SENTENCES[1:2])


def test_translate_n_best_with_scores(client, models):
    translator = by_name(models, "multi30k-de-en").pipeline
    answer = client.post("/translate", json={"text": SENTENCES[:1], "n_best": 3}).json()
    expected = translator.translate_n_best(SENTENCES[:1], n_best=3)[0]
    assert [found["text"] for found in answer["n_best"][0]] == [e.text for e in expected]
    assert answer["n_best"][0][0]["score"] == pytest.approx(expected[0].score, abs=1e-5)


def test_classify_answers_labels_and_probabilities(client, models):
    classifier = by_name(models, "sentiment").pipeline
    texts = ["a gorgeous , witty , seductive movie .", "dull , boring and far too long ."]
    answer = client.post("/classify", json={"text": texts, "top_k": 2}).json()
    expected = classifier.classify(texts, top_k=2)
    assert answer["labels"] == [top[0][0] for top in expected]
    assert answer["classifications"][1][0]["probability"] == pytest.approx(expected[1][0][1])


def test_generate_streams_the_same_text_it_answers(client, models):
    body = {"prompt": "ROMEO:", "max_new_tokens": 30, "seed": 7, "strategy": "sample"}
    whole = client.post("/generate", json=body).json()["texts"]
    generator = by_name(models, "shakespeare-char").pipeline
    assert whole == generator.generate("ROMEO:", max_new_tokens=30, seed=7, strategy="sample")
    with client.stream("POST", "/generate", json={**body, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [block for block in response.read().decode().split("\n\n") if block]
    pieces = [json.loads(e.split("data: ", 1)[1]) for e in events if e.startswith("event: piece")]
    end = json.loads(events[-1].split("data: ", 1)[1])
    assert events[-1].startswith("event: end") and end["texts"] == whole
    assert "ROMEO:" + "".join(piece["text"] for piece in pieces) == whole[0]
    assert len(pieces) > 1


BAD_REQUESTS = [
    ("/translate", "not json", 400, "not valid JSON"),
    ("/translate", "[1, 2]", 422, "JSON object"),
    ("/translate", {"txt": ["a"]}, 422, "unknown field 'txt'"),
    ("/translate", {"text": 3}, 422, "string or a list of strings"),
    ("/translate", {"text": []}, 422, "empty list"),
    ("/translate", {"text": ["a"] * 9}, 413, "at most 8"),
    ("/translate", {"text": ["a" * 3000]}, 413, "2000"),
    ("/translate", {"text": "a", "beam_size": "five"}, 422, "'beam_size' must be an integer"),
    ("/translate", {"text": "a", "beam_size": True}, 422, "'beam_size' must be an integer"),
    ("/translate", {"text": "a", "beam_size": 0}, 422, "beam_size"),
    ("/translate", {"text": "a", "n_best": 9}, 422, "n_best"),
    ("/translate", {"text": "a", "batch_size": 4}, 422, "unknown field 'batch_size'"),
    ("/translate", {"text": "a", "model": "nope"}, 404, "no translator named 'nope'"),
    ("/translate", {"text": "a", "model": 3}, 422, '"model" must be a string'),
    ("/generate", {"prompt": "a", "stream": "yes"}, 422, '"stream" must be true or false'),
    ("/generate", {"prompt": "a", "temperature": float("nan")}, 422, "temperature"),
    ("/generate", {"prompt": "a", "strategy": "best"}, 422, "strategy"),
    ("/classify", {"text": [""]}, 422, "empty"),
    ("/classify", {"text": "a", "stream": True}, 422, "unknown field 'stream'"),
    ("/nowhere", {}, 404, "no such endpoint"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD_REQUESTS)
def test_a_bad_request_is_a_json_error_and_the_server_goes_on(client, path, body, status, message):
    if isinstance(body, str):
        response = client.post(path, content=body)
    else:
        response = client.post(path, content=json.dumps(body))  # NaN stays NaN
    assert response.status_code == status
    assert message in response.json()["error"]
    assert client.post("/classify", json={"text": "fine"}).status_code == 200


def test_a_wrong_method_is_a_json_error(client):
    response = client.get("/translate")
    assert response.status_code == 405 and "Method Not Allowed" in response.json()["error"]


def test_a_task_without_a_model_is_a_404_naming_the_fix(models):
    with TestClient(create_app([by_name(models, "sentiment")])) as client:
        response = client.post("/translate", json={"text": "a"})
    assert response.status_code == 404
    assert "no translator" in response.json()["error"] and "--model" in response.json()["error"]


def test_a_request_over_its_time_is_a_504_and_its_generation_stops(models):
    limits = Limits(timeout=1.0)
    with TestClient(create_app([by_name(models, "shakespeare-char")], limits)) as client:
        response = client.post("/generate", json={"prompt": "A", "max_new_tokens": 100_000})
        assert response.status_code == 504 and "limit of 1 s" in response.json()["error"]
        # Had the first generation gone on, this one would wait behind it and time out too.
        again = client.post("/generate", json={"prompt": "A", "max_new_tokens": 5})
        assert again.status_code == 200 and len(again.json()["texts"][0]) == 6


def test_a_bundle_is_served_on_onnx_runtime(tmp_path):
    """A bundle folder serves as a checkpoint does, on ONNX Runtime, with the same answers."""
    from click.testing import CliRunner

    from seqgen.cli import main

    bundle = tmp_path / "spam-bundle"
    assert (
        CliRunner().invoke(main, ["export", "--model", "spam", "--output", str(bundle)]).exit_code
        == 0
    )
    (model,) = load_models([str(bundle)], device="cpu", backend="auto")
    texts = ["WINNER!! Claim your free prize now, call 09061701461", "see you at lunch?"]
    with TestClient(create_app([model])) as client:
        listed = client.get("/models").json()["models"][0]
        answer = client.post("/classify", json={"text": texts, "top_k": 2}).json()
    assert listed["name"] == "spam-bundle" and listed["format"] == "bundle"
    assert listed["runtime"] == "onnxruntime" and listed["labels"] == ["ham", "spam"]
    expected = model.pipeline.classify(texts, top_k=2)
    assert answer["labels"] == [top[0][0] for top in expected] == ["spam", "ham"]
