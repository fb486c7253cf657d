"""``seqgen serve --ensemble NAME=A,B``: translators served as one, answering what the
ensemble's pipeline answers, described in GET /models, and every bad spec refused in one line."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from seqgen.checkpoints import bundled_models
from seqgen.errors import SeqgenError
from seqgen.serving.app import create_app
from seqgen.serving.models import load_models, parse_ensemble

SENTENCES = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee."]


@pytest.fixture(scope="module")
def models():
    # The bundled translator's bundle (ONNX Runtime) beside its own checkpoint (PyTorch): an
    # ensemble of a model with itself translates as the model.
    checkpoint = str(bundled_models()["multi30k-de-en"] / "model.safetensors")
    return load_models(
        ["multi30k-de-en"],
        device="cpu",
        backend="auto",
        ensembles=[f"pair=multi30k-de-en,{checkpoint}"],
    )


def test_an_ensemble_is_listed_with_its_members_and_their_runtimes(models):
    with TestClient(create_app(models)) as client:
        listed = {model["name"]: model for model in client.get("/models").json()["models"]}
    pair = listed["pair"]
    assert pair["task"] == "translation" and pair["endpoint"] == "/translate"
    assert pair["format"] == "ensemble" and pair["runtime"] == "onnxruntime+pytorch"
    assert pair["members"][0] == "multi30k-de-en" and pair["members"][1].endswith(".safetensors")
    assert (
        listed["multi30k-de-en"]["format"] == "bundle" and "members" not in listed["multi30k-de-en"]
    )


@pytest.mark.parametrize("options", [{"beam_size": 1}, {"beam_size": 5}])
def test_an_ensemble_answers_what_its_pipeline_translates(models, options):
    single, pair = (model.pipeline for model in models)
    with TestClient(create_app(models)) as client:
        answer = client.post("/translate", json={"text": SENTENCES, "model": "pair", **options})
        alone = client.post("/translate", json={"text": SENTENCES, "model": "multi30k-de-en"})
        unnamed = client.post("/translate", json={"text": SENTENCES})
    assert answer.status_code == 200
    assert answer.json()["translations"] == pair.translate(SENTENCES, **options)
    assert pair.translate(SENTENCES, **options) == single.translate(SENTENCES, **options)
    assert alone.json()["translations"] == single.translate(SENTENCES)
    # Two translators served: a request names one.
    assert unnamed.status_code == 422 and '"model"' in unnamed.json()["error"]


@pytest.mark.parametrize(
    "spec",
    ["pair", "=a,b", "pair=a", "pair=a,", "pair=,b", "pair=a,,b"],
)
def test_a_malformed_spec_is_refused_in_one_line(spec):
    with pytest.raises(SeqgenError, match="is not NAME=MODEL,MODEL") as error:
        parse_ensemble(spec)
    assert "\n" not in str(error.value)


def test_a_spec_names_its_members_in_order():
    assert parse_ensemble(" big = a.safetensors, runs/b ,c") == (
        "big",
        ("a.safetensors", "runs/b", "c"),
    )


@pytest.mark.parametrize(
    ("models", "ensembles", "message"),
    [
        ([], ["x=multi30k-de-en,shakespeare-char"], "an ensemble is of translators only"),
        ([], ["x=sentiment,spam"], "only translators decode as an ensemble"),
        (
            ["multi30k-de-en"],
            ["multi30k-de-en=multi30k-de-en,multi30k-de-en"],
            "two models are named 'multi30k-de-en'",
        ),
        # A bad spec fails before any model loads.
        (["no-such-model"], ["pair"], "is not NAME=MODEL,MODEL"),
    ],
)
def test_what_cannot_be_served_as_an_ensemble_is_refused(models, ensembles, message):
    with pytest.raises(SeqgenError, match=message):
        load_models(models, device="cpu", backend="auto", ensembles=ensembles)
