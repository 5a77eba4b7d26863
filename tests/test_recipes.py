"""Recipes: every shipped file loads; every kind of mistake is an error naming key, file and line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY, run_cli

from mindxh.config import Recipe, RecipeError, load_recipe, recipe_to_yaml

ALL_RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))


def test_recipes_exist():
    assert TINY in ALL_RECIPES


_PIPELINE_SECTIONS = {"pipeline", "sft", "grpo", "evaluation", "controls"}


def _for_pipeline(path: Path) -> bool:
    """Whether the recipe (or a `base:` it builds on) has sections only `mindxh pipeline` reads."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if _PIPELINE_SECTIONS & set(data):
        return True
    return "base" in data and _for_pipeline(path.parent / data["base"])


@pytest.mark.parametrize("path", ALL_RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_recipe_loads_and_validates(path, tmp_path):
    recipe = load_recipe(path, pipeline=_for_pipeline(path))  # with the pipeline's own checks
    assert isinstance(recipe, Recipe)
    # the resolved form is itself a valid recipe that resolves to the same thing (paths in a
    # recipe are taken as written, not relative to its file, so it may be read from anywhere)
    again = tmp_path / path.name
    again.write_text(recipe_to_yaml(recipe))
    assert load_recipe(again) == recipe


def test_the_pipeline_recipes_are_checked_as_such():
    assert {p.name for p in ALL_RECIPES if _for_pipeline(p)} >= {"x1.yaml", "x1-code.yaml"}


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(path, overrides=()) -> str:
    with pytest.raises(RecipeError) as exc:
        load_recipe(path, list(overrides))
    return str(exc.value)


def test_unknown_key_names_key_file_line_and_suggestion(tmp_path):
    p = write(tmp_path, "r.yaml", "model:\n  hidden_size: 64\n  num_haeds: 4\n")
    msg = error_of(p)
    assert "model.num_haeds" in msg
    assert f"{p}, line 3" in msg
    assert "did you mean 'num_heads'" in msg.lower()


def test_unknown_section(tmp_path):
    msg = error_of(write(tmp_path, "r.yaml", "modle:\n  hidden_size: 64\n"))
    assert "'modle'" in msg and "line 1" in msg and "'model'" in msg


def test_wrong_type_names_key(tmp_path):
    msg = error_of(write(tmp_path, "r.yaml", "train:\n  batch_size: eight\n"))
    assert "train.batch_size" in msg and "line 2" in msg and "expected int" in msg


def test_bool_is_not_an_int(tmp_path):
    assert "train.max_steps" in error_of(write(tmp_path, "r.yaml", "train:\n  max_steps: true\n"))


def test_float_written_yaml11_style_is_accepted(tmp_path):
    recipe = load_recipe(write(tmp_path, "r.yaml", "optim:\n  lr: 3e-4\n  warmup_steps: 1\n"))
    assert recipe.optim.lr == pytest.approx(3e-4)


def test_num_heads_must_divide_hidden_size(tmp_path):
    msg = error_of(write(tmp_path, "r.yaml", "model:\n  hidden_size: 100\n  num_heads: 3\n  num_kv_heads: 1\n"))
    assert "model.num_heads" in msg and "does not divide hidden_size=100" in msg and "line 3" in msg


def test_num_kv_heads_must_divide_num_heads(tmp_path):
    msg = error_of(write(tmp_path, "r.yaml", "model:\n  num_heads: 4\n  num_kv_heads: 3\n"))
    assert "model.num_kv_heads" in msg and "does not divide num_heads=4" in msg


def test_literal_choices_listed(tmp_path):
    msg = error_of(write(tmp_path, "r.yaml", "compile:\n  mode: fast\n"))
    assert "compile.mode" in msg and "'graph'" in msg and "'pynative'" in msg


def test_grpo_micro_batch_rows_must_not_be_negative(tmp_path):
    msg = error_of(write(tmp_path, "r.yaml", "grpo:\n  micro_batch_rows: -4\n"))
    assert "grpo.micro_batch_rows" in msg and "must be >= 0" in msg and "line 2" in msg


def test_cross_section_check(tmp_path):
    msg = error_of(write(tmp_path, "r.yaml", "model:\n  max_seq_len: 64\ntrain:\n  seq_len: 128\n"))
    assert "train.seq_len" in msg and "line 4" in msg


def test_sft_rows_must_fit_the_model_when_the_pipeline_post_trains(tmp_path):
    r = write(tmp_path, "r.yaml", "model:\n  max_seq_len: 128\nsft:\n  seq_len: 256\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(r, pipeline=True)
    msg = str(exc.value)
    assert "sft.seq_len" in msg and "line 4" in msg and "max_seq_len=128" in msg
    # a pipeline without the post-training stages, or any other command, reads no sft key
    assert load_recipe(r, ["pipeline.stages=[tokenizer,pretrain]"], pipeline=True)
    assert load_recipe(r).sft.seq_len == 256
    for key in ("grpo.max_new_tokens", "evaluation.max_new_tokens"):  # no room for a prompt
        with pytest.raises(RecipeError, match=f"{key} .*leave no room for a prompt"):
            load_recipe(TINY, [f"{key}=128", "sft.seq_len=128"], pipeline=True)


def test_duplicate_keys_are_errors_not_silently_the_last(tmp_path):
    msg = error_of(write(tmp_path, "r.yaml", "model:\n  hidden_size: 128\n  hidden_size: 64\n"))
    assert "duplicate key 'model.hidden_size'" in msg and "line 3" in msg and "line 2" in msg
    # a repeated section would drop the first one whole
    msg = error_of(write(tmp_path, "s.yaml", "model:\n  num_heads: 8\nmodel:\n  num_layers: 3\n"))
    assert "duplicate key 'model'" in msg and "line 3" in msg


def test_unreadable_recipe_files_are_named(tmp_path):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"name: ok\nseed: 1\n# caf\xe9\n")
    assert "not UTF-8" in error_of(latin1) and "line 3" in error_of(latin1)
    assert "is a directory" in error_of(tmp_path)


@pytest.mark.parametrize("value", [".inf", "-.inf", "inf", "Infinity"])
def test_float_keys_must_be_finite(tmp_path, value):
    msg = error_of(TINY, [f"optim.lr={value}"])
    assert "optim.lr" in msg and "finite" in msg
    assert "finite" in error_of(write(tmp_path, "r.yaml", f"model:\n  rope_theta: {value}\n"))


@pytest.mark.parametrize("text", ["runs/exp #2", "2024-01-01", "0123", "yes", "a: b"])
def test_text_keys_set_on_the_command_line_keep_what_was_typed(text):
    """YAML would read these as `runs/exp` (a comment), a date, 83, True and a mapping."""
    assert load_recipe(TINY, [f"output_dir={text}", f"name={text}"]).output_dir == text
    assert load_recipe(TINY, ["output_dir='quoted #x'"]).output_dir == "quoted #x"
    assert load_recipe(TINY, ["tokenizer.path=null"]).tokenizer.path is None


def test_base_inheritance_and_override_order(tmp_path):
    write(tmp_path, "base.yaml", "model:\n  hidden_size: 64\n  num_heads: 4\ntrain:\n  max_steps: 50\n")
    child = write(tmp_path, "child.yaml", "base: base.yaml\nmodel:\n  hidden_size: 96\n")
    recipe = load_recipe(child, ["train.max_steps=70"])
    assert recipe.model.hidden_size == 96  # child beats base
    assert recipe.model.num_heads == 4  # inherited
    assert recipe.train.max_steps == 70  # --set beats both


def test_error_in_base_names_the_base_file(tmp_path):
    write(tmp_path, "base.yaml", "model:\n  hiden: 1\n")
    msg = error_of(write(tmp_path, "child.yaml", "base: base.yaml\n"))
    assert "base.yaml, line 2" in msg


def test_base_cycle_and_missing_base(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    assert "cycle" in error_of(tmp_path / "a.yaml")
    assert "base recipe not found" in error_of(write(tmp_path, "c.yaml", "base: nope.yaml\n"))


def test_bad_override_is_named():
    msg = error_of(TINY, ["model.num_kv_heads=3"])
    assert "--set model.num_kv_heads=3" in msg
    assert "--set" in error_of(TINY, ["train.nope=1"])
    assert "(--set nosuch.key=1)" in error_of(TINY, ["nosuch.key=1"])  # an unknown section
    assert "expected section.key=value" in error_of(TINY, ["justakey"])


def test_invalid_yaml_names_line(tmp_path):
    msg = error_of(write(tmp_path, "r.yaml", "model:\n  hidden_size: [64\n"))
    assert "invalid YAML" in msg and str(tmp_path / "r.yaml") in msg


def test_missing_recipe_file(tmp_path):
    assert "not found" in error_of(tmp_path / "absent.yaml")


def test_cli_recipe_show_prints_resolved_recipe():
    res = run_cli("recipe", "show", str(TINY), "--set", "model.hidden_size=64")
    assert res.returncode == 0, res.stderr
    assert "hidden_size: 64" in res.stdout and "rope_theta" in res.stdout


@pytest.mark.parametrize("args, needle", [
    (("recipe", "show", "RECIPE", "--set", "model.hiden_size=64"), "did you mean 'hidden_size'"),
    (("train", "RECIPE", "--set", "model.num_heads=3"), "model.num_heads"),
    (("train", "RECIPE", "--set", "model.num_kv_heads=3"), "model.num_kv_heads"),
    (("train", "RECIPE", "--set", "train.batch_size=x"), "train.batch_size"),
    (("train", "RECIPE", "--set", "seed=-1"), "seed (--set seed=-1): must be in [0, 2147483647]"),
    (("train", "RECIPE", "--set", "seed=4294967296"), "must be in [0, 2147483647]"),
    (("train", "RECIPE", "--set", "grpo.checkpoint_every=0"), "grpo.checkpoint_every"),
])
def test_cli_recipe_errors_are_one_line_no_traceback(args, needle, tmp_path):
    args = tuple(str(TINY) if a == "RECIPE" else a for a in args)
    res = run_cli(*args, "--output-dir", str(tmp_path / "o")) if args[0] == "train" else run_cli(*args)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ") and needle in res.stderr.lower()
    assert not (tmp_path / "o").exists()  # rejected before anything was written


def test_readme_documents_every_recipe_key():
    import dataclasses

    readme = (REPO / "README.md").read_text()
    missing = []
    for section in dataclasses.fields(Recipe):
        cls = section.type if dataclasses.is_dataclass(section.type) else None
        if cls is None:
            sub = getattr(Recipe(), section.name)
            cls = type(sub) if dataclasses.is_dataclass(sub) else None
        if cls is None:
            if f"`{section.name}`" not in readme:
                missing.append(section.name)
            continue
        for f in dataclasses.fields(cls):
            if f"`{section.name}.{f.name}`" not in readme:
                missing.append(f"{section.name}.{f.name}")
    assert not missing, f"README recipe reference lacks: {missing}"


def test_readme_documents_every_command_and_option():
    """Each command has a row in the README's command table, and each of its options is in
    that row or in the doc the row links to."""
    import argparse
    import re

    from mindxh.cli.main import build_parser, leaf_parsers

    readme = (REPO / "README.md").read_text()
    table = readme.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `mindxh")]
    top = build_parser()
    shared = {o for a in top._actions for o in a.option_strings}  # every command's: said once
    missing = [f"mindxh {o}" for o in shared - {"-h", "--help"} if f"`{o}`" not in table]
    for parser in leaf_parsers(top):
        command = parser.prog
        text = " ".join(r for r in rows if f"`{command}" in r)
        if not text:
            missing.append(command)
            continue
        text += "".join((REPO / doc).read_text() for doc in re.findall(r"\]\((docs/[^)#]+)", text))
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            missing += [f"{command} {o}" for o in action.option_strings
                        if o.startswith("--") and o not in shared
                        and not re.search(re.escape(o) + r"(?![\w-])", text)]
    assert not missing, f"README command table lacks: {missing}"


def test_mfu_device_is_checked_before_compute():
    assert "unknown device 'tpu'" in error_of(TINY, ["metrics.device=tpu"])
    msg = error_of(TINY, ["compile.device=Ascend"])  # auto cannot guess which Ascend part
    assert "metrics.device" in msg and "ascend-910b2" in msg
    recipe = load_recipe(TINY, ["compile.device=Ascend", "metrics.device=910b3", "metrics.dtype=bfloat16"])
    assert recipe.metrics.peak_device(recipe.compile.device) == "910b3"
    assert load_recipe(TINY).metrics.peak_device("CPU") == "cpu"


PREPARED = """tokenizer:
  path: tok.model
data:
  source: prepared
  datasets:
    - path: data/a
      weight: 3
    - {path: data/b, wieght: 1}
"""


def test_datasets_are_a_typed_list_whose_items_are_checked_like_sections(tmp_path):
    p = write(tmp_path, "r.yaml", PREPARED)
    msg = error_of(p)
    assert "data.datasets[1].wieght" in msg and f"{p}, line 8" in msg
    assert "did you mean 'weight'" in msg.lower()
    recipe = load_recipe(write(tmp_path, "ok.yaml", PREPARED.replace("wieght", "weight")),
                         ["train.init_from=runs/pre", "data.eval_dataset=data/held"])
    assert [(d.path, d.weight) for d in recipe.data.datasets] == [("data/a", 3.0), ("data/b", 1.0)]
    assert recipe.train.init_from == "runs/pre" and recipe.data.eval_dataset == "data/held"
    again = write(tmp_path, "again.yaml", recipe_to_yaml(recipe))
    assert load_recipe(again) == recipe


@pytest.mark.parametrize("override, key, needle, where", [
    ("data.datasets=[{weight: 2}]", "data.datasets[0].path", "required key is missing", "--set"),
    ("data.datasets=[{path: a, weight: 0}]", "data.datasets[0].weight", "positive", "--set"),
    ("data.datasets={path: a}", "data.datasets", "expected a list", "--set"),
    ("data.datasets=[]", "data.datasets", "at least one dataset", "--set"),
    ("data.source=synthetic", "data.datasets", "only read when data.source is prepared", "line 5"),
    ("tokenizer.path=null", "tokenizer.path", "the tokenizer they were prepared with", "--set"),
    # inside a mapping YAML's types apply (a text key set alone keeps what was typed)
    ("train={init_from: 3}", "train.init_from", "expected str or null", "--set"),
])
def test_prepared_data_mistakes_name_the_key(tmp_path, override, key, needle, where):
    msg = error_of(write(tmp_path, "r.yaml", PREPARED.replace("wieght", "weight")), [override])
    assert msg.startswith(key) and needle in msg and where in msg


def test_a_parallel_plan_names_every_broken_rule_at_once():
    msg = error_of(TINY, ["parallel.tensor=3", "parallel.pipeline=3", "parallel.micro_batches=2",
                          "cluster.devices=5"])
    assert msg.startswith("5 problems:")
    for needle in ("tensor=3 does not divide model.num_heads=4",
                   "tensor=3 does not divide model.num_kv_heads=2",
                   "pipeline=3 does not divide model.num_layers=2",
                   "micro_batches=2 < pipeline=3",
                   "devices=5 but data_parallel x tensor x pipeline = 1 x 3 x 3 = 9"):
        assert needle in msg, msg
    assert "(--set parallel.tensor=3)" in msg


def test_vocab_parallel_checks_the_tokenizers_size_when_the_model_follows_it():
    msg = error_of(TINY, ["parallel.tensor=2", "parallel.vocab_parallel=true",
                          "tokenizer.vocab_size=511"])
    assert "tensor=2 does not divide tokenizer.vocab_size=511" in msg


def test_a_valid_plan_and_its_device_count():
    r = load_recipe(TINY, ["parallel.tensor=2", "parallel.pipeline=2", "parallel.micro_batches=4",
                           "parallel.data_parallel=4", "cluster.devices=16",
                           "parallel.sequence_parallel=true"])
    assert r.parallel.devices == 16


@pytest.mark.parametrize("overrides, key, needle", [
    (["precision.compute_dtype=bfloat16"], "precision.compute_dtype", "no CPU kernels"),
    (["precision.compute_dtype=float16"], "precision.loss_scale", "needs loss scaling"),
    (["parallel.sequence_parallel=true"], "parallel.sequence_parallel", "needs parallel.tensor > 1"),
    (["parallel.expert=2", "parallel.data_parallel=2"], "parallel.expert", "mixture-of-experts"),
    (["parallel.optimizer_shard=zero1"], "parallel.optimizer_shard", "needs data_parallel > 1"),
    (["compile.max_device_memory=lots"], "compile.max_device_memory", "58GB"),
    (["compile.precision_mode=fastest"], "compile.precision_mode", "must_keep_origin_dtype"),
])
def test_scale_out_settings_are_checked(overrides, key, needle):
    msg = error_of(TINY, overrides)
    assert key in msg and needle in msg, msg


def test_recipe_changes_lists_each_differing_key():
    from mindxh.config.loader import recipe_changes

    base = load_recipe(TINY)
    other = load_recipe(TINY, ["train.max_steps=7", "data.levels=[1,3]", "optim.lr=0.5"])
    assert recipe_changes(recipe_to_yaml(base), recipe_to_yaml(base)) == []
    assert recipe_changes(recipe_to_yaml(base), recipe_to_yaml(other)) == [
        f"data.levels: {json.dumps(base.data.levels)} -> [1, 3]",
        f"optim.lr: {base.optim.lr} -> 0.5",
        f"train.max_steps: {base.train.max_steps} -> 7",
    ]
    assert recipe_changes("a: 1", "a: 1\nb: {c: 2}") == ["b.c: (absent) -> 2"]


def test_max_steps_option_is_checked_as_itself(tmp_path):
    res = run_cli("train", str(TINY), "--max-steps", "0", "--output-dir", str(tmp_path / "o"))
    assert res.returncode == 2 and "--max-steps: must be a positive integer, got 0" in res.stderr
    assert "--set" not in res.stderr.splitlines()[-1] and not (tmp_path / "o").exists()


def test_verbose_goes_before_or_after_the_command_and_hides_mindspore_warnings_otherwise(
        monkeypatch):
    import os

    from mindxh.cli.main import build_parser, quiet_mindspore

    parser = build_parser()
    for argv, verbose in ((["-v", "recipe", "show", "r"], True), (["recipe", "show", "r", "-v"], True),
                          (["recipe", "show", "r", "--verbose"], True), (["recipe", "show", "r"], False)):
        assert parser.parse_args(argv).verbose is verbose, argv
    monkeypatch.setenv("GLOG_v", "unset")  # restored after the test, whatever is set here
    for verbose, glog in ((False, "3"), (True, None)):
        monkeypatch.delenv("GLOG_v")
        quiet_mindspore(verbose)
        assert os.environ.get("GLOG_v") == glog
    monkeypatch.setenv("GLOG_v", "1")  # the user's setting stands
    quiet_mindspore(False)
    assert os.environ["GLOG_v"] == "1"
