"""`mindxh export` and `mindxh generate --mindir`: the exported graphs alone give the same greedy
tokens as the checkpoint, at batch sizes other than the export's; a damaged directory is a
clear error naming the file."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from conftest import TINY, run_cli

from mindxh.generate.mindir import ExportedModelError, read_manifest
from mindxh.utils.fsio import file_sha256

PROMPTS = ["What is 1+2?", "2+2?", "Mia has 3 pens and buys 4 more.",
           ("Tom has 12 apples. He gives 5 to Ann and then buys 9 more at the market. "
            "How many apples does Tom have now? Answer with a number."),
           "Compute 7*8."]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("export")
    run = root / "run"
    res = run_cli("train", str(TINY), "--output-dir", str(run), "--max-steps", "2", "--no-progress",
                  "--set", f"tokenizer.path={tiny_tokenizer}", "--set", "data.heldout_batches=1",
                  "--set", "train.batch_size=4", "--set", "train.seq_len=32",
                  "--set", "model.init_std=0.3")  # wide logits: varied tokens, no near-ties
    assert res.returncode == 0, res.stderr[-3000:]
    out = root / "mindir"
    res = run_cli("export", "--checkpoint", str(run), "--format", "mindir", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return run, out


def _generate(source: list[str], batch_size: int) -> list[dict]:
    args = [a for p in PROMPTS for a in ("--prompt", p)]
    res = run_cli("generate", *source, *args, "--max-new-tokens", "10", "--batch-size",
                  str(batch_size), "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_manifest_describes_and_checks_the_files(exported):
    run, out = exported
    m = read_manifest(out)  # verifies every file's size and sha256
    assert set(m["files"]) == {"prefill.mindir", "decode.mindir", "tokenizer.model"}
    for name, entry in m["files"].items():
        assert entry["sha256"] == file_sha256(out / name) and entry["bytes"] > 0
    assert m["tokenizer"] == "tokenizer.model" and m["mindxh_version"]
    assert m["source_checkpoint"].startswith(str(run / "checkpoints"))
    assert m["max_len"] == m["model"]["max_seq_len"] + 1 and m["vocab_size"] == m["model"]["vocab_size"]
    assert m["prompt_widths"][0] == m["prompt_bucket"] == 32 and m["prompt_widths"][-1] == m["cache_len"]
    assert 0 <= m["max_abs_diff"] <= 1e-4 and m["max_abs_diff_full_forward"] <= 1e-3
    prefill, decode = m["graphs"]["prefill"], m["graphs"]["decode"]
    assert [t["name"] for t in prefill["inputs"]] == ["tokens", "positions", "out_index"]
    assert [t["name"] for t in decode["inputs"]] == ["tokens", "positions", "k_cache", "v_cache"]
    assert prefill["inputs"][0]["shape"] == [None, None] and decode["inputs"][0]["shape"] == [None, 1]
    layers, heads = m["model"]["num_layers"], m["model"]["num_kv_heads"]
    assert decode["inputs"][2]["shape"] == [layers, None, heads, m["cache_len"], m["model"]["head_dim"]]
    assert [t["name"] for t in decode["outputs"]] == ["logits", "k_cache", "v_cache"]


def test_mindir_generation_equals_checkpoint_generation(exported, tmp_path):
    """Greedy tokens token for token, on prompts of several lengths (two prompt buckets): the
    checkpoint decodes 4 rows at a time, the exported graphs 2 (and 1 in the last chunk),
    neither the export check's 3 rows, with the run directory out of reach."""
    run, out = exported
    from_checkpoint = _generate(["--checkpoint", str(run)], batch_size=4)
    hidden = run.with_name("run.hidden")
    copy = tmp_path / "copied"
    shutil.copytree(out, copy)
    run.rename(hidden)  # the export must not need the run (recipe, checkpoint, tokenizer)
    try:
        from_mindir = _generate(["--mindir", str(copy)], batch_size=2)
    finally:
        hidden.rename(run)
    assert [r["prompt"] for r in from_mindir] == PROMPTS
    assert len({tuple(r["ids"]) for r in from_checkpoint}) == len(PROMPTS)  # a real comparison
    assert [r["ids"] for r in from_mindir] == [r["ids"] for r in from_checkpoint]
    assert [r["completion"] for r in from_mindir] == [r["completion"] for r in from_checkpoint]
    for a, b in zip(from_mindir, from_checkpoint):
        assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-4)


@pytest.mark.parametrize("damage, message", [
    ("delete decode.mindir", r"decode\.mindir is missing"),
    ("corrupt prefill.mindir", r"prefill\.mindir: sha256 .* differs from the manifest"),
    ("truncate tokenizer.model", r"tokenizer\.model has \d+ bytes, the manifest says"),
    ("delete manifest.json", r"manifest\.json is missing"),
    ("corrupt manifest.json", r"manifest\.json: not valid JSON"),
])
def test_a_damaged_export_is_an_error_naming_the_file(exported, tmp_path, damage, message):
    _, out = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    action, name = damage.split()
    path = copy / name
    if action == "delete":
        path.unlink()
    elif action == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(ExportedModelError, match=message):
        read_manifest(copy)


@pytest.mark.parametrize("edit, message", [
    ({"max_len": 500}, "do not fit the graphs' .*-column cache"),
    ({"graphs": "x"}, "'graphs' or the sizes are not as"),
])
def test_an_edited_manifest_is_refused(exported, tmp_path, edit, message):
    """The sizes are read from the manifest (not hashed): they must agree with the graphs'
    signature, or generation would run past the cache and give wrong tokens silently."""
    _, out = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, **edit}))
    with pytest.raises(ExportedModelError, match=message):
        read_manifest(copy)


def test_cli_reports_a_damaged_export_and_bad_options(exported, tmp_path):
    run, out = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "decode.mindir").write_bytes(b"not a graph")
    res = run_cli("generate", "--mindir", str(copy), "--prompt", "hi")
    assert res.returncode == 2 and "decode.mindir has 11 bytes" in res.stderr
    res = run_cli("export", "--checkpoint", str(run), "--out", str(tmp_path / "x"), "--max-len", "9999")
    assert res.returncode == 2 and "max_len=9999 must be in 2..257" in res.stderr


def test_export_overwrites_only_an_export_and_a_failed_one_keeps_the_last(exported, tmp_path,
                                                                          monkeypatch):
    run, out = exported
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "tokenizer.json").write_text("MY NOTES")
    for extra in ((), ("notes.txt",)):
        for name in extra:
            (mine / name).write_text("x")
        res = run_cli("export", "--checkpoint", str(run), "--out", str(mine))
        assert res.returncode == 2 and "not empty and not an earlier export" in res.stderr
        assert (mine / "tokenizer.json").read_text() == "MY NOTES"
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    # a check that fails after the graphs were written (as a cache bug would): the error names
    # --out, the earlier export is intact, and no staging folder is left
    import mindspore as ms

    from mindxh.export import mindir
    monkeypatch.setattr(mindir, "_check", lambda *args: (0.0, 1.5))
    ms.set_device("CPU")
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        with pytest.raises(mindir.ExportError, match=rf"^{re.escape(str(copy))}: the cached graphs' logits "
                                                      r"differ from a full forward pass by 1\.5 "
                                                      r"\(allowed: 0\.01\)"):
            mindir.export_checkpoint(run, copy, tolerance=0)
    finally:
        ms.set_context(mode=previous)
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    # tolerance 0 holds on CPU (the reloaded graphs compute the same sums); re-export: replaced
    res = run_cli("export", "--checkpoint", str(run), "--out", str(copy), "--tolerance", "0")
    assert res.returncode == 0 and sorted(p.name for p in copy.iterdir()) == sorted(before)


def test_qwen_style_model_exports_and_generates_the_same_in_process(tiny_tokenizer, tmp_path):
    """export_model / load_generator in one process, for the options the CLI test's Llama
    lacks (untied head, q/k norm, q/k/v bias, one KV head): greedy tokens equal the live
    Generator's at three batch sizes, and the logprobs agree closely."""
    import mindspore as ms

    from mindxh.config.schema import ModelConfig
    from mindxh.export.mindir import export_model
    from mindxh.generate import Generator, SamplingConfig
    from mindxh.generate.mindir import load_generator
    from mindxh.models.llama.model import Decoder
    from mindxh.tokenizer import Tokenizer

    ms.set_device("CPU")  # before any kernel runs, as every in-process MindSpore test does
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        tok = Tokenizer.load(tiny_tokenizer)
        cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, num_heads=4, num_kv_heads=1,
                          intermediate_size=48, num_layers=2, max_seq_len=48, init_std=0.3,
                          qk_norm=True, qkv_bias=True, tie_embeddings=False)
        model = Decoder(cfg, seed=3)
        summary = export_model(model, tok, tmp_path / "qwen", max_len=41, prompt_bucket=8)
        assert summary.max_abs_diff <= 1e-5 and set(summary.files) >= {"prefill.mindir", "decode.mindir"}
        rng = np.random.default_rng(0)
        prompts = [[tok.bos_id, *rng.integers(10, tok.vocab_size, n).tolist()] for n in (2, 9, 17, 4, 11)]
        greedy = SamplingConfig(max_new_tokens=8, temperature=0.0)
        live = Generator(model, tok, 2, 41, prompt_bucket=8).generate(prompts, greedy)
        assert len({tuple(c.ids) for c in live}) == len(prompts)
        for batch in (1, 3, 5):
            exported, manifest = load_generator(tmp_path / "qwen", batch)
            got = exported.generate(prompts, greedy)
            assert [c.ids for c in got] == [c.ids for c in live], batch
            np.testing.assert_allclose([c.logprobs for c in got], [c.logprobs for c in live], atol=1e-4)
        assert manifest["model"]["qk_norm"] and manifest["max_len"] == 41
    finally:
        ms.set_context(mode=previous)
