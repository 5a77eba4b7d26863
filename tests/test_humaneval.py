"""HumanEval through the sandbox: canonical solutions all pass, empty completions all fail."""
from __future__ import annotations

import json
from math import comb

import pytest
from conftest import run_cli

from mindxh.eval.humaneval import load_problems, pass_at_k, truncate_completion


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def test_problems_ship_with_the_package(problems):
    assert len(problems) == 164
    first = problems["HumanEval/0"]
    assert {"prompt", "canonical_solution", "test", "entry_point"} <= set(first)


def test_pass_at_k_is_the_unbiased_estimator():
    # task A: 2 of 5 right; task B: 5 of 5 right
    records = ([{"task_id": "A", "passed": i < 2} for i in range(5)] +
               [{"task_id": "B", "passed": True} for _ in range(5)])
    scores = pass_at_k(records, [1, 2, 5, 6])
    assert scores[1] == pytest.approx((2 / 5 + 1) / 2)
    assert scores[2] == pytest.approx(((1 - comb(3, 2) / comb(5, 2)) + 1) / 2)
    assert scores[5] == pytest.approx(1.0)
    assert 6 not in scores  # more than any problem's samples: not estimable


def test_completions_end_at_the_next_top_level_statement():
    body = "    return sorted(xs)\n"
    assert truncate_completion(body) == body
    assert truncate_completion(body + "\n\ndef main():\n    print(f([2, 1]))\n") == body + "\n"
    assert truncate_completion(body + "\nif __name__ == '__main__':\n    main()") == body
    assert truncate_completion(body + "\nprint(f([1]))\n# done") == body
    # indented lines of the body are not statements at the top level
    inner = "    if xs:\n        # sort\n        return sorted(xs)\n    print(1)\n"
    assert truncate_completion(inner + "\nclass A: pass") == inner


def test_canonical_pass_and_empty_fail_through_the_cli(problems, tmp_path):
    samples = tmp_path / "samples.jsonl"
    with samples.open("w") as f:
        for task_id, p in problems.items():
            f.write(json.dumps({"task_id": task_id, "completion": p["canonical_solution"],
                                "kind": "canonical"}) + "\n")
            f.write(json.dumps({"task_id": task_id, "completion": "", "kind": "empty"}) + "\n")
    out = tmp_path / "results.jsonl"
    res = run_cli("eval", "humaneval", "--samples", str(samples), "--out", str(out), "--k", "1,2,3",
                  "--workers", "2", "--timeout", "10", timeout=600)
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 * 164
    canonical = [r for r in records if r["kind"] == "canonical"]
    empty = [r for r in records if r["kind"] == "empty"]
    failed = [(r["task_id"], r["result"], r.get("error")) for r in canonical if not r["passed"]]
    assert failed == [], failed
    assert sum(r["passed"] for r in empty) == 0
    assert pass_at_k(canonical, [1]) == {1: 1.0} and pass_at_k(empty, [1]) == {1: 0.0}
    print(f"\nhumaneval: canonical {len(canonical) - len(failed)}/164, empty "
          f"{sum(r['passed'] for r in empty)}/164")
    # one right and one wrong sample per problem: pass@1 = 1/2, pass@2 = 1
    assert "pass@1: 0.5000" in res.stdout and "pass@2: 1.0000" in res.stdout
    assert "pass@3: n/a" in res.stdout


def test_bad_samples_are_refused(tmp_path):
    samples = tmp_path / "bad.jsonl"
    samples.write_text('{"task_id": "HumanEval/0", "completion": "    return False\\n"}\n'
                       '{"task_id": "HumanEval/999", "completion": ""}\n'
                       '{"task_id": "HumanEval/1"}\n')
    res = run_cli("eval", "humaneval", "--samples", str(samples), timeout=120)
    assert res.returncode == 2
    assert f"{samples}:2: unknown task_id 'HumanEval/999'" in res.stderr
    assert f"{samples}:3: missing or mistyped field 'completion'" in res.stderr
    res = run_cli("eval", "arith", "--samples", str(samples), timeout=120)
    assert res.returncode == 2 and "--checkpoint" in res.stderr
