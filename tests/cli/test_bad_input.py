"""The bad-input battery (issue 23): every case is one ``seqgen`` command line that must fail
with a non-zero exit code, exactly one ``seqgen: error: ...`` line on stderr naming the
problem (the words listed), nothing on stdout, and no traceback.

Cases are data, in :data:`CASES`: an id, the arguments (built from :class:`Files`, the
fixture files: a tiny trained run, hostile checkpoints and bundles) and the words the line
must contain. Cases that need a real exported bundle, a subprocess or the Python API are
tested beside their code and listed in ``docs/robustness.md``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from seqgen.cli import main

GENERATE = ("--max-new-tokens", "5", "--device", "cpu")
DEEP = "[" * 200_000 + "]" * 200_000  # a RecursionError in json before issue 23


@dataclass(frozen=True)
class Files:
    """What the cases point at; built once per session, never changed by a case."""

    run: Path  # a tiny trained generator run (best, last, metrics.csv)
    recipe: Path  # its recipe
    folder: Path  # a scratch folder: hostile checkpoints and bundles live here

    def __getattr__(self, name: str) -> Path:  # files.deep_recipe -> folder/deep_recipe
        return self.folder / name


@dataclass(frozen=True)
class Case:
    id: str
    args: Callable[[Files], list[object]]
    words: tuple[str, ...]
    stdin: str | None = None


def generate(*args: object) -> Callable[[Files], list[object]]:
    return lambda f: ["generate", "--model", f.run, *GENERATE, *args]


def generate_model(name: str) -> Callable[[Files], list[object]]:
    return lambda f: ["generate", "--model", f.folder / name, *GENERATE, "--prompt", "The"]


def translate_model(name: str) -> Callable[[Files], list[object]]:
    return lambda f: ["translate", "--model", f.folder / name, "--device", "cpu"]


def train(*args: object) -> Callable[[Files], list[object]]:
    return lambda f: ["train", f.recipe, "--quiet", *args]


def evaluate(*args: object) -> Callable[[Files], list[object]]:
    return lambda f: ["evaluate", "--model", f.run, "--device", "cpu", *args]


DAMAGED = ("damaged metadata", "retrain or re-export")
OUTSIDE = ("not a plain file name inside the bundle", "re-export the bundle")

CASES = [
    # --- generation options, refused before a model is loaded --------------------------------
    Case(
        "max-new-tokens-0", generate("--max-new-tokens", "0"), ("max_new_tokens = 0", "at least 1")
    ),
    Case("temperature-nan", generate("--temperature", "nan"), ("temperature = ", "at most 100")),
    Case("temperature-inf", generate("--temperature", "inf"), ("temperature = ", "at most 100")),
    Case("temperature-1e308", generate("--temperature", "1e308"), ("at most 100",)),
    Case("temperature-negative", generate("--temperature", "-1"), ("temperature = -1.0",)),
    Case("top-p-0", generate("--top-p", "0"), ("top_p = 0.0", "(0, 1]")),
    Case("top-p-1.5", generate("--top-p", "1.5"), ("top_p = 1.5",)),
    Case("top-k-negative", generate("--top-k", "-2"), ("top_k = -2",)),
    Case("num-samples-0", generate("--num-samples", "0"), ("num_samples",)),
    Case(
        "beam-fewer-than-samples",
        generate("--strategy", "beam", "--num-samples", "9"),
        ("beam_size is 5", "--beam-size"),
    ),
    Case("strategy-unknown", generate("--strategy", "nucleus"), ("'nucleus' is not one of",)),
    Case(
        "options-before-model",
        lambda f: ["generate", "--model", f.folder / "nothing", "--max-new-tokens", "0"],
        ("max_new_tokens",),
    ),
    # --- devices ------------------------------------------------------------------------------
    *(
        Case(
            f"device-bogus-{command}",
            lambda f, c=command: [c, "--device", "bogus"],
            ("unknown device 'bogus'", "cpu, cuda"),
            stdin="hello\n",
        )
        for command in ("generate", "translate", "classify", "evaluate")
    ),
    # --- checkpoints: missing, corrupt, hostile -----------------------------------------------
    Case("checkpoint-missing", generate_model("missing.safetensors"), ("no such checkpoint",)),
    Case("checkpoint-folder-without-one", generate_model("empty"), ("no such checkpoint",)),
    Case(
        "evaluate-missing",
        lambda f: ["evaluate", "--model", f.folder / "missing.safetensors"],
        ("no such checkpoint",),
    ),
    Case("checkpoint-truncated", generate_model("truncated.safetensors"), ("not a readable",)),
    Case("checkpoint-random", generate_model("random.safetensors"), ("corrupt or truncated",)),
    Case(
        "evaluate-truncated",
        lambda f: ["evaluate", "--model", f.folder / "truncated.safetensors"],
        ("not a readable checkpoint",),
    ),
    Case(
        "evaluate-random",
        lambda f: ["evaluate", "--model", f.folder / "random.safetensors"],
        ("corrupt or truncated",),
    ),
    Case("recipe-200000-deep", generate_model("deep_recipe.safetensors"), DAMAGED),
    Case("tokenizer-200000-deep", generate_model("deep_tokenizer.safetensors"), DAMAGED),
    Case("recipe-a-list", generate_model("recipe_list.safetensors"), ("recipe is a JSON list",)),
    Case("tokenizer-a-list", generate_model("tokenizer_list.safetensors"), ("a JSON list",)),
    Case("info-a-list", generate_model("info_list.safetensors"), ("info is a JSON list",)),
    Case(
        "hidden-size-1e9",
        generate_model("hidden_1e9.safetensors"),
        ("too large to build", "retrain or re-export"),
    ),
    Case(
        "hidden-size-1e6",
        generate_model("hidden_1e6.safetensors"),
        ("of shape (4000000, 16), the file holds (128, 16)",),
    ),
    Case(
        "int8-weights",
        generate_model("int8.safetensors"),
        ("stored as int8 where float32 belongs", "retrain or re-export"),
    ),
    Case(
        "recipe-bad-value",
        generate_model("bad_value.safetensors"),
        ("damaged recipe", "model.hidden_size = 'x'"),
    ),
    Case(
        "export-int8-weights",
        lambda f: ["export", "--model", f.folder / "int8.safetensors", "--output", f.folder / "x"],
        ("stored as int8",),
    ),
    # --- bundles: nothing outside the folder, no deep nesting --------------------------------
    Case("graph-file-passwd", translate_model("bundle_graph_passwd"), ("graphs.step.file",)),
    Case("graph-file-absolute", translate_model("bundle_graph_absolute"), OUTSIDE),
    Case(
        "shortlist-file-outside",
        translate_model("bundle_shortlist_outside"),
        ("shortlist.file = '../outside.json'", *OUTSIDE),
    ),
    Case(
        "tokenizer-file-outside",
        translate_model("bundle_tokenizer_outside"),
        ("tokenizers.source.file", *OUTSIDE),
    ),
    Case(
        "sentencepiece-model-absolute",
        translate_model("bundle_sentencepiece_absolute"),
        ("tokenizers.target.sentencepiece_model = '/etc/passwd'",),
    ),
    Case("graph-link-outside", translate_model("bundle_link"), ("leads outside the bundle",)),
    Case(
        "manifest-200000-deep",
        translate_model("bundle_deep"),
        ("manifest.json is not readable JSON", "nested deeper than"),
    ),
    Case("manifest-a-list", translate_model("bundle_list"), ("not a seqgen bundle manifest",)),
    # --- recipes and training ----------------------------------------------------------------
    Case(
        "recipe-unknown-key",
        train("--set", "train.learning_rat=1"),
        ("train.learning_rat", "did you mean 'learning_rate'"),
    ),
    Case("override-not-an-int", train("--set", "train.max_steps=ten"), ("not a valid int",)),
    Case("override-bad-choice", train("--set", "model.cell=transformer"), ("lstm, gru, rnn",)),
    Case("override-no-key", train("--set", "train"), ("section.key=value",)),
    Case("override-nan", train("--set", "train.learning_rate=nan"), ("finite number",)),
    Case(
        "override-section-not-table",
        train("--set", "task.x=1"),
        ("'task' is not a section",),
    ),
    Case("recipe-missing", lambda f: ["train", f.folder / "nope.toml"], ("no such recipe",)),
    Case("recipe-not-toml", lambda f: ["train", f.folder / "broken.toml"], ("not valid TOML",)),
    Case("recipe-a-folder", lambda f: ["train", f.folder], ("is a directory",)),
    Case(
        "run-exists-without-resume",
        lambda f: ["train", f.recipe, "--output", f.run, "--quiet"],
        ("already holds a run", "--resume"),
    ),
    Case(
        "resume-nothing",
        train("--output", Path("/nonexistent/new"), "--resume"),
        ("no last.safetensors",),
    ),
    *(
        Case(
            f"resume-{name}",
            lambda f, n=name: ["train", f.recipe, "--output", f.folder / f"run_{n}", "--resume"],
            words,
        )
        for name, words in [
            ("training-state-a-list", ("--resume", "no table", "another --output")),
            ("training-state-without-step", ("--resume", "a bad step None", "another --output")),
            ("training-state-200000-deep", ("damaged metadata", "nested deeper than")),
        ]
    ),
    Case(
        "train-output-under-a-file",
        lambda f: ["train", f.recipe, "--output", f.folder / "a-file" / "run"],
        ("cannot create the run folder", "--output"),
    ),
    Case(
        "export-output-under-a-file",
        lambda f: ["export", "--model", "spam", "--output", f.folder / "a-file" / "bundle"],
        ("cannot write a bundle", "--output"),
    ),
    Case(
        # 10**18, not 10**9: sizes past int64 fail before any allocation, so the test is
        # safe on a machine that overcommits memory (10**9 asks for 238 GiB at once)
        "train-hidden-size-1e18",
        train("--output", "huge", "--set", "model.hidden_size=1000000000000000000"),
        ("training ran out of memory", "overflowed", "model.*_size"),
    ),
    Case(
        "corpus-and-files",
        lambda f: [
            "train",
            f.folder / "translation.toml",
            "--set",
            f"data.train_source={f.folder / 'train.de'}",
            "--set",
            f"data.train_target={f.folder / 'train.en'}",
        ],
        ("data.train_source", "data.corpus", "--set data.corpus="),
    ),
    # --- evaluate -----------------------------------------------------------------------------
    Case("evaluate-no-test-split", evaluate("--split", "test"), ("no 'test' split", "--file")),
    Case(
        "evaluate-split-and-file",
        lambda f: ["evaluate", "--model", f.run, "--split", "val", "--file", f.recipe],
        ("--split", "not both"),
    ),
    Case("evaluate-empty-file", lambda f: evaluate("--file", f.empty_txt)(f), ("is empty",)),
    Case("evaluate-not-utf8", lambda f: evaluate("--file", f.latin1_txt)(f), ("not UTF-8",)),
    Case("evaluate-missing-file", lambda f: evaluate("--file", f.nope_txt)(f), ("no such file",)),
]


def assert_one_line_error(result: Result, *words: str) -> str:
    """The run failed with one ``seqgen: error:`` line naming the problem; returns it."""
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    # A SystemExit from sys.exit is how the CLI ends; anything else escaped it.
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("seqgen: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line(
    case: Case, files: Files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a default output (runs/...) would go
    args = [str(arg) for arg in case.args(files)]
    result = CliRunner().invoke(main, args, input=case.stdin)
    assert_one_line_error(result, *case.words)
    # Nothing half-written is left behind: no new file here, none in the fixture folder.
    assert list(tmp_path.iterdir()) == []
    assert not [p for p in files.folder.rglob("*") if p.name.endswith(".tmp")]


API_CASES = {
    "load-kind-translator": (lambda f: {"kind": "translator"}, "unknown kind 'translator'"),
    "load-backend-unknown": (lambda f: {"backend": "tf"}, "unknown backend 'tf'"),
    "load-int8-weights": (lambda f: {"path": f.folder / "int8.safetensors"}, "stored as int8"),
    "load-several-paths": (
        lambda f: {"path": ["multi30k-de-en", "multi30k-de-en"]},
        "takes one model; for an ensemble of translators: load_ensemble",
    ),
    "load-bundle-outside": (
        lambda f: {"path": f.folder / "bundle_shortlist_outside"},
        "not a plain file name",
    ),
}


@pytest.mark.parametrize("name", sorted(API_CASES))
def test_the_python_api_refuses_in_one_line(name: str, files: Files) -> None:
    """``seqgen.load`` raises a SeqgenError of one line (the CLI prints it), nothing else."""
    import seqgen
    from seqgen.errors import SeqgenError

    arguments, words = API_CASES[name]
    with pytest.raises(SeqgenError) as error:
        seqgen.load(**arguments(files))
    assert "\n" not in str(error.value) and words in str(error.value)


def test_the_case_ids_are_unique() -> None:
    assert len({case.id for case in CASES}) == len(CASES)


# --- the fixture files ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def files(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("bad-input")
    recipe = next(trained_run.parent.glob("*.toml"))
    (folder / "empty").mkdir()
    (folder / "a-file").write_text("not a folder\n", encoding="utf-8")
    (folder / "broken.toml").write_text("[train\n", encoding="utf-8")
    (folder / "empty_txt").write_bytes(b"")
    (folder / "latin1_txt").write_bytes("Na\xefve caf\xe9.\n".encode("latin-1"))
    (folder / "outside.json").write_text("{}", encoding="utf-8")
    best = trained_run / "best.safetensors"
    data = best.read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (folder / "random.safetensors").write_bytes(os.urandom(1000))
    write_hostile_checkpoints(best, folder)
    write_hostile_bundles(folder)
    write_translation_recipe(folder)
    return Files(run=trained_run, recipe=recipe, folder=folder)


def write_hostile_checkpoints(best: Path, folder: Path) -> None:
    """Copies of ``best`` with one thing changed each, named as the cases name them."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(best), framework="pt") as handle:
        metadata = handle.metadata()
    weights = load_file(str(best))
    recipe = json.loads(metadata["recipe"])

    def with_model(**values: object) -> str:
        return json.dumps({**recipe, "model": {**recipe["model"], **values}})

    changed = {
        "deep_recipe": {"recipe": DEEP},
        "deep_tokenizer": {"tokenizer": DEEP},
        "recipe_list": {"recipe": "[1, 2]"},
        "tokenizer_list": {"tokenizer": "[1, 2]"},
        "info_list": {"info": "[1]"},
        "hidden_1e9": {"recipe": with_model(hidden_size=10**9)},
        "hidden_1e6": {"recipe": with_model(hidden_size=10**6)},
        "bad_value": {"recipe": with_model(hidden_size="x")},
    }
    for name, entries in changed.items():
        save_file(weights, str(folder / f"{name}.safetensors"), metadata={**metadata, **entries})
    as_int8 = {k: (v * 100).to(torch.int8) for k, v in weights.items()}
    save_file(as_int8, str(folder / "int8.safetensors"), metadata=metadata)
    write_hostile_runs(best.parent, folder)


def write_hostile_runs(run: Path, folder: Path) -> None:
    """Copies of the run folder whose last.safetensors holds a damaged training state."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    last = run / "last.safetensors"
    with safe_open(str(last), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(last))
    states = {
        "training-state-a-list": "[1, 2]",
        "training-state-without-step": json.dumps({"__dict__": []}),
        "training-state-200000-deep": DEEP,
    }
    for name, training in states.items():
        copy = shutil.copytree(run, folder / f"run_{name}")
        save_file(
            tensors, str(copy / "last.safetensors"), metadata={**metadata, "training": training}
        )


def write_hostile_bundles(folder: Path) -> None:
    """Stand-in translator bundles (empty graphs: the manifest is refused before they are
    read), each with one hostile entry."""
    stand_in_translator, write_manifest = _stand_in_bundles()

    def hostile(name: str, change: Callable[[dict], None]) -> Path:
        bundle = folder / name
        manifest = stand_in_translator(bundle)
        change(manifest)
        write_manifest(bundle, manifest)
        return bundle

    hostile("bundle_graph_passwd", lambda m: m["graphs"]["step"].update(file="../../etc/passwd"))
    hostile("bundle_graph_absolute", lambda m: m["graphs"]["encoder"].update(file="/etc/passwd"))
    hostile("bundle_shortlist_outside", lambda m: m["shortlist"].update(file="../outside.json"))
    hostile(
        "bundle_tokenizer_outside",
        lambda m: m["tokenizers"]["source"].update(file="../outside.json"),
    )
    hostile(
        "bundle_sentencepiece_absolute",
        lambda m: m["tokenizers"]["target"].update(sentencepiece_model="/etc/passwd"),
    )
    linked = hostile("bundle_link", lambda m: None)
    (linked / "step.onnx").unlink()
    os.symlink(folder / "outside.json", linked / "step.onnx")
    (hostile("bundle_deep", lambda m: None) / "manifest.json").write_text(DEEP)
    (hostile("bundle_list", lambda m: None) / "manifest.json").write_text("[1, 2]")


def _stand_in_bundles() -> tuple[Callable, Callable]:
    """tests/bundles/test_reader.py's stand-in bundle writer (tests/ is not a package)."""
    import importlib.util

    path = Path(__file__).parents[1] / "bundles" / "test_reader.py"
    spec = importlib.util.spec_from_file_location("bundle_reader_tests", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.stand_in_translator, module.write_manifest


def write_translation_recipe(folder: Path) -> None:
    """A translation recipe naming a corpus, as every bundled one does, and aligned files
    that ``--set data.train_source=...`` points at."""
    (folder / "train.de").write_text("ein hund .\n", encoding="utf-8")
    (folder / "train.en").write_text("a dog .\n", encoding="utf-8")
    (folder / "translation.toml").write_text(
        'task = "translation"\n[data]\ncorpus = "multi30k:de-en"\n', encoding="utf-8"
    )
