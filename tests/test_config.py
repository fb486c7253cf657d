"""Recipes: loading, ``--set`` overrides, type coercion and one-line errors naming the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqgen.config import MAX_JSON_DEPTH, json_depth, parse_json, text_depth
from seqgen.errors import ConfigError, SeqgenError
from seqgen.recipes import Recipe, apply_overrides, load_recipe, recipe_from_dict, recipe_to_dict
from seqgen.task import registered_tasks
from seqgen.tasks.generation.config import (
    GenerationDecodingConfig,
    LanguageModelConfig,
    LanguageModelTrainConfig,
    TextDataConfig,
)

RECIPES = sorted(Path(__file__).parents[1].glob("recipes/*.toml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_error_is_a_seqgen_error() -> None:
    assert issubclass(ConfigError, SeqgenError)


def test_defaults_are_declared_once_on_the_dataclasses(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, 'task = "generation"\n'))
    assert recipe == Recipe()
    assert recipe.train == LanguageModelTrainConfig()
    assert recipe.model == LanguageModelConfig()
    assert recipe.data == TextDataConfig()
    assert recipe.decoding == GenerationDecodingConfig()


def test_the_older_name_of_the_generation_task_still_reads(tmp_path: Path) -> None:
    # seqgen 0.1's recipes, checkpoints and bundles say "language_model".
    recipe = load_recipe(write(tmp_path, 'task = "language_model"\n'))
    assert recipe.task == "generation" and recipe == Recipe()


def test_overrides_are_coerced_to_the_field_types(write_recipe) -> None:
    recipe = load_recipe(
        write_recipe(),
        [
            "train.max_steps=12",
            "train.learning_rate=3e-4",
            "train.max_minutes=2",
            "train.warmup_steps=1e1",
            "train.mixed_precision=false",
            "model.tie_weights=true",
            "model.embedding_size=32",
            "model.cell=gru",
            "data.validation_fraction=0.25",
        ],
    )
    assert recipe.train.max_steps == 12 and type(recipe.train.max_steps) is int
    assert recipe.train.learning_rate == pytest.approx(3e-4)
    assert type(recipe.train.learning_rate) is float
    assert recipe.train.max_minutes == 2.0 and type(recipe.train.max_minutes) is float
    assert recipe.train.warmup_steps == 10 and type(recipe.train.warmup_steps) is int
    assert recipe.train.mixed_precision is False
    assert recipe.model.tie_weights is True
    assert recipe.model.cell == "gru"
    assert recipe.data.validation_fraction == 0.25


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("False", False), ("1", True), ("0", False), ("yes", True), (" no ", False)],
)
def test_boolean_overrides(tmp_path: Path, text: str, expected: bool) -> None:
    recipe = load_recipe(write(tmp_path, ""), [f"train.mixed_precision={text}"])
    assert recipe.train.mixed_precision is expected


@pytest.mark.parametrize(
    ("toml", "override", "expected"),
    [
        ('cpu_mixed_precision = "auto"', None, "auto"),
        ("cpu_mixed_precision = true", None, True),
        ("", "train.cpu_mixed_precision=auto", "auto"),
        ("", "train.cpu_mixed_precision=false", False),
        ("", "train.cpu_mixed_precision=yes", True),
    ],
)
def test_cpu_mixed_precision_is_a_switch_or_auto(
    tmp_path: Path, toml: str, override: str | None, expected: bool | str
) -> None:
    recipe = load_recipe(write(tmp_path, f"[train]\n{toml}\n"), [override] if override else [])
    assert recipe.train.cpu_mixed_precision == expected
    assert type(recipe.train.cpu_mixed_precision) is type(expected)


@pytest.mark.parametrize("toml", ['"sometimes"', "1"])
def test_cpu_mixed_precision_refuses_other_values(tmp_path: Path, toml: str) -> None:
    with pytest.raises(ConfigError, match=r"train\.cpu_mixed_precision = .*") as caught:
        load_recipe(write(tmp_path, f"[train]\ncpu_mixed_precision = {toml}\n"))
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"true, false or \"auto\""):
        load_recipe(write(tmp_path, ""), ["train.cpu_mixed_precision=sometimes"])


def test_toml_integers_become_floats_and_whole_floats_ints(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, "[train]\nlearning_rate = 1\nmax_steps = 20.0\n"))
    assert recipe.train.learning_rate == 1.0 and type(recipe.train.learning_rate) is float
    assert recipe.train.max_steps == 20 and type(recipe.train.max_steps) is int


def test_an_override_replaces_the_recipe_value(write_recipe) -> None:
    path = write_recipe()
    assert load_recipe(path).train.max_steps == 6
    assert load_recipe(path, ["train.max_steps=9"]).train.max_steps == 9
    assert load_recipe(path, ["train.max_steps=9", "train.max_steps=11"]).train.max_steps == 11


def test_an_override_can_point_the_corpus_at_a_file(write_recipe, tmp_path: Path) -> None:
    other = tmp_path / "other text.txt"
    recipe = load_recipe(write_recipe(), [f"data.corpus={other}"])
    assert recipe.data.corpus == str(other)


def test_unknown_key_names_it_and_suggests_the_nearest(write_recipe) -> None:
    with pytest.raises(ConfigError) as caught:
        load_recipe(write_recipe(), ["train.learning_rat=1"])
    message = str(caught.value)
    assert "train.learning_rat" in message
    assert "'learning_rate'" in message
    assert "\n" not in message


def test_unknown_key_in_the_toml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.hiden_size.*'hidden_size'"):
        load_recipe(write(tmp_path, "[model]\nhiden_size = 3\n"))


def test_unknown_key_without_a_near_match_lists_the_valid_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid keys: .*corpus"):
        load_recipe(write(tmp_path, ""), ["data.zzzzzz=1"])


def test_unknown_section_suggests_the_nearest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown section 'trian'.*'train'"):
        load_recipe(write(tmp_path, "[trian]\nmax_steps = 3\n"))
    with pytest.raises(ConfigError, match="unknown section 'modle'"):
        load_recipe(write(tmp_path, ""), ["modle.cell=gru"])


def test_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="task = 'painting'.*generation, translation"):
        load_recipe(write(tmp_path, 'task = "painting"\n'))


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("train.max_steps=abc", r"train\.max_steps = 'abc' is not a valid int"),
        ("train.max_steps=2.5", r"train\.max_steps = '2\.5' is not a valid int"),
        ("train.max_steps=1.5e0", r"train\.max_steps = 1\.5 is not a valid int"),
        ("train.learning_rate=fast", r"train\.learning_rate = 'fast' is not a valid float"),
        ("train.learning_rate=nan", r"train\.learning_rate = nan .*finite"),
        ("train.max_minutes=inf", r"train\.max_minutes = inf .*finite"),
        ("model.tie_weights=maybe", r"model\.tie_weights = 'maybe' is not a valid bool"),
        ("train.batch_size=0", r"train\.batch_size = 0 .*> 0"),
        ("train.learning_rate=-1", r"train\.learning_rate = -1\.0 .*> 0"),
        ("train.grad_clip=-1", r"train\.grad_clip = -1\.0 .*>= 0"),
        ("model.dropout=1", r"model\.dropout = 1\.0 .*\[0, 1\)"),
        ("data.validation_fraction=0", r"data\.validation_fraction must be > 0"),
        ("data.test_fraction=0.95", r"data\.validation_fraction \+ data\.test_fraction"),
        ("train.device=tpu", r"train\.device = 'tpu'.*cuda:N"),
        (
            "tokenizer.kind=bytes",
            r"tokenizer\.kind = 'bytes'.*char, word, whitespace, sentencepiece",
        ),
    ],
)
def test_bad_override_values(write_recipe, override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as caught:
        load_recipe(write_recipe(), [override])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("toml", "pattern"),
    [
        ("[train]\nmax_steps = 1.5\n", r"train\.max_steps = 1\.5 is not a valid int"),
        ("[train]\nmax_steps = true\n", r"train\.max_steps = True is not a valid int"),
        ("[train]\nlearning_rate = true\n", r"train\.learning_rate = True .*float"),
        ("[model]\ntie_weights = 1\n", r"model\.tie_weights = 1 is not a valid bool"),
        ("[model]\ncell = 3\n", r"model\.cell = 3 is not a valid str"),
        ("train = 3\n", r"\[train\] must be a table"),
    ],
)
def test_bad_toml_value_types(tmp_path: Path, toml: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_recipe(write(tmp_path, toml))


@pytest.mark.parametrize(
    ("section_key", "value", "choices"),
    [
        ("model.cell", "transformer", "lstm, gru, rnn"),
        ("train.schedule", "linear", "cosine, constant"),
    ],
)
def test_invalid_choices_list_the_valid_ones(
    write_recipe, section_key: str, value: str, choices: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_recipe(write_recipe(), [f"{section_key}={value}"])
    message = str(caught.value)
    assert f"{section_key} = {value!r}" in message
    assert choices in message


def test_tie_weights_needs_equal_sizes(write_recipe) -> None:
    with pytest.raises(ConfigError) as caught:
        load_recipe(write_recipe(), ["model.tie_weights=true"])
    message = str(caught.value)
    assert "model.tie_weights" in message
    assert "16" in message and "32" in message
    tied = load_recipe(write_recipe(), ["model.tie_weights=true", "model.embedding_size=32"])
    assert tied.model.tie_weights


@pytest.mark.parametrize("item", ["train.max_steps", "max_steps=3", "train.=3", "=3", ""])
def test_malformed_set(write_recipe, item: str) -> None:
    with pytest.raises(ConfigError, match="section.key=value") as caught:
        load_recipe(write_recipe(), [item])
    assert "train.learning_rate=3e-4" in str(caught.value)


def test_set_into_a_value_that_is_not_a_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'task' is not a section"):
        load_recipe(write(tmp_path, 'task = "language_model"\n'), ["task.x=1"])


def test_apply_overrides_leaves_its_input_alone() -> None:
    values = {"train": {"max_steps": 5}}
    result = apply_overrides(values, ["train.max_steps=7", "model.cell=gru"])
    assert values == {"train": {"max_steps": 5}}
    assert result == {"train": {"max_steps": "7"}, "model": {"cell": "gru"}}


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such recipe: .*nope.toml"):
        load_recipe(tmp_path / "nope.toml")


def test_a_folder_is_not_a_recipe(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read recipe"):
        load_recipe(tmp_path)


@pytest.mark.parametrize("text", ["[train\nmax_steps = 3\n", "max_steps = \n", "a = 1\na = 2\n"])
def test_invalid_toml(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_recipe(write(tmp_path, text))


def test_non_utf8_recipe(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[data]\ncorpus = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_recipe(path)


def test_recipe_dict_round_trip(write_recipe) -> None:
    recipe = load_recipe(
        write_recipe(), ["model.cell=gru", "tokenizer.kind=word", "train.learning_rate=3e-4"]
    )
    values = recipe_to_dict(recipe)
    assert set(values) == {"task", "data", "tokenizer", "model", "train", "decoding"}
    assert recipe_from_dict(values) == recipe
    # Checkpoints store it as JSON.
    assert recipe_from_dict(json.loads(json.dumps(values))) == recipe


def test_recipe_from_dict_validates() -> None:
    with pytest.raises(ConfigError, match="train.batch_size"):
        recipe_from_dict({"train": {"batch_size": -4}})


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.name)
def test_every_shipped_recipe_parses(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.task in ("generation", "translation", "classification")
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe


# --- property-based (hypothesis): the parser and overrides on any input -----------------------


FAST = settings(max_examples=80, deadline=None)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def section_fields() -> list[tuple[str, str, str]]:
    """(task, section, key) for every key of every registered task's recipe."""
    import dataclasses

    return [
        (task.name, section, field.name)
        for task in registered_tasks().values()
        for section, cls in task.sections.items()
        for field in dataclasses.fields(cls)
    ]


FIELDS = section_fields()


@FAST
@given(values=json_values)
def test_any_json_recipe_is_a_recipe_or_one_config_error(values: object) -> None:
    """A checkpoint's or bundle's stored recipe may be anything: it builds, or fails with a
    ConfigError of one line, never another exception."""
    try:
        recipe_from_dict(values)  # type: ignore[arg-type]
    except ConfigError as error:
        assert "\n" not in str(error)


@FAST
@given(field=st.sampled_from(FIELDS), value=json_values)
def test_any_value_for_any_key_is_taken_or_one_config_error(
    field: tuple[str, str, str], value: object
) -> None:
    task, section, key = field
    try:
        recipe = recipe_from_dict({"task": task, section: {key: value}})
    except ConfigError as error:
        message = str(error)
        assert "\n" not in message and len(message) < 400, message
        return
    # Taken: the stored recipe reads back as the same recipe.
    assert recipe_from_dict(json.loads(json.dumps(recipe_to_dict(recipe)))) == recipe


@FAST
@given(field=st.sampled_from(FIELDS), text=st.text(max_size=12))
def test_any_set_text_is_taken_or_one_config_error(field: tuple[str, str, str], text: str) -> None:
    task, section, key = field
    overrides = [f"{section}.{key}={text}"]
    try:
        recipe = recipe_from_dict(apply_overrides({"task": task}, overrides))
    except ConfigError as error:
        assert "\n" not in str(error)
        return
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe


@FAST
@given(number=st.integers(min_value=1, max_value=10**12))
def test_an_integer_set_as_text_reads_back(number: int) -> None:
    for text in (str(number), f" {number} "):
        recipe = recipe_from_dict(apply_overrides({}, [f"train.max_steps={text}"]))
        assert recipe.train.max_steps == number


@FAST
@given(number=st.floats(min_value=1e-12, max_value=1e12, allow_nan=False))
def test_a_float_set_as_text_reads_back(number: float) -> None:
    recipe = recipe_from_dict(apply_overrides({}, [f"train.learning_rate={number!r}"]))
    assert recipe.train.learning_rate == number


@FAST
@given(
    base=st.dictionaries(st.sampled_from(["train", "model"]), st.just({"seed": 1}), max_size=2),
    key=st.sampled_from(["seed", "max_steps", "log_every"]),
    value=st.text(alphabet="0123456789=.e ", min_size=1, max_size=6),
)
def test_overrides_set_exactly_their_key_and_leave_the_input_alone(
    base: dict, key: str, value: str
) -> None:
    before = json.dumps(base, sort_keys=True)
    result = apply_overrides(base, [f"train.{key}={value}"])
    assert result["train"][key] == value  # the text after the first "=", as given
    assert json.dumps(base, sort_keys=True) == before


@FAST
@given(depth=st.integers(min_value=1, max_value=3 * MAX_JSON_DEPTH))
def test_json_nested_past_the_limit_is_refused(depth: int) -> None:
    text = "[" * depth + "]" * depth
    if depth <= MAX_JSON_DEPTH:
        assert json_depth(parse_json(text)) == depth
    else:
        with pytest.raises(ValueError, match="nested deeper than"):
            parse_json(text)


@FAST
@given(
    value=st.recursive(
        st.none() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(alphabet='[]{}"\\ab'), children, max_size=3)
        ),
        max_leaves=30,
    )
)
def test_text_depth_counts_brackets_outside_strings(value: object) -> None:
    # Brackets and quotes inside strings (escaped or not) do not nest.
    text = json.dumps(value)
    assert text_depth(text) == min(json_depth(value), MAX_JSON_DEPTH + 1)
    assert text_depth(text.encode()) == text_depth(text)


@pytest.mark.parametrize(
    ("in_file", "overrides", "refused"),
    [
        ({"corpus": "multi30k:de-en"}, ["data.train_source=a.de", "data.train_target=a.en"], True),
        ({"corpus": "multi30k:de-en", "train_source": "a.de"}, [], True),
        ({"corpus": "", "train_source": "a.de", "validation_source": "v.de"}, [], False),
        # A corpus asked for on the command line replaces the recipe's files, as asked.
        (
            {"corpus": "", "train_source": "a.de", "validation_source": "v.de"},
            ["data.corpus=multi30k:de-en"],
            False,
        ),  # fmt: skip
        ({"corpus": ""}, ["data.corpus=multi30k:de-en", "data.train_source=a.de"], True),
    ],
)
def test_a_corpus_and_files_together_are_refused_unless_the_corpus_was_asked_for(
    tmp_path: Path, in_file: dict, overrides: list[str], refused: bool
) -> None:
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in in_file.items())
    path = write(tmp_path, f'task = "translation"\n[data]\n{lines}\n')
    if not refused:
        load_recipe(path, overrides)
        return
    with pytest.raises(ConfigError, match=r"would be ignored.*--set data\.corpus="):
        load_recipe(path, overrides)
