"""The synthetic code task: specs, splits, streams, and grading by hidden tests in the sandbox."""
from __future__ import annotations

import pytest

from mindxh.config.schema import SYNTHETIC_TASKS
from mindxh.data.corpus import corpus_source, corpus_texts
from mindxh.data.synthetic import sample_texts, split_of
from mindxh.data.synthetic_code import (
    CODE_LEVELS,
    expression,
    generate_code,
    iter_code_problems,
    reference,
)
from mindxh.rewards.code import GradeStats, grade_programs, run_batch
from mindxh.rewards.judge import correct, rewards
from mindxh.tasks import arith, code
from mindxh.tasks.mix import TASKS, RLStream, cold_start_samples, heldout_problems


def _program(source: str) -> str:
    return f"<think>x</think><answer>{source}</answer>"


def test_the_config_knows_every_task():
    assert set(SYNTHETIC_TASKS) == set(TASKS)


@pytest.mark.parametrize("level", sorted(CODE_LEVELS))
def test_reference_solution_is_the_spec(level):
    """The shown solution computes what the step-by-step reference computes, on every test,
    for thousands of specs: parentheses follow Python's precedence."""
    for index in range(1500):
        p = generate_code(3, index, level)
        ns: dict = {}
        exec(p.program(), ns)
        f = reference(p.ops)
        for x in range(-12, 20):
            assert ns["f"](x) == f(x), (p.program(), x)
        assert len(p.ops) in range(CODE_LEVELS[level].min_ops, CODE_LEVELS[level].max_ops + 1)
        assert all(y == f(x) for x, y in p.tests)
        assert all(f"f({x}) == {y}" in p.prompt() for x, y in p.examples)


def test_expression_parenthesises_only_where_needed():
    assert expression([("+", 3), ("*", 2), ("%", 5)]) == "(x + 3) * 2 % 5"
    assert expression([("*", 2), ("+", 3)]) == "x * 2 + 3"
    assert expression([("neg", 0), ("sq", 0)]) == "(-x) ** 2"
    assert expression([("neg", 0), ("neg", 0)]) == "-(-x)"
    assert expression([("-", 1), ("max", 4), ("abs", 0)]) == "abs(max(x - 1, 4))"


def test_problems_are_deterministic_and_hidden_tests_go_beyond_the_examples():
    assert generate_code(0, 5, 2) == generate_code(0, 5, 2)
    p = generate_code(0, 5, 2)
    shown = {x for x, _ in p.examples}
    assert {x for x, _ in p.tests} - shown  # inputs the prompt does not show
    assert any(x < 0 for x, _ in p.tests)


def test_split_is_by_function_and_streams_are_disjoint():
    held = code.heldout_problems(0, 2, 200)
    assert all(split_of(p.key) == "heldout" for p in held)
    train_keys = {p.key for _, p in zip(range(3000), (q for _, q in
                                                      iter_code_problems(0, "train", [2])))}
    assert not train_keys & {p.key for p in held}
    rl, nxt = code.rl_problems(0, 2, 0, 50)
    assert not {p.key for p in rl} & {p.key for p in held}
    again, _ = code.rl_problems(0, 2, 0, 50)
    assert [p.spec for p in again] == [p.spec for p in rl]
    rest, _ = code.rl_problems(0, 2, nxt, 5)
    assert rest[0].spec not in {p.spec for p in rl}


def test_grading_runs_hidden_tests_in_the_sandbox():
    problems = [generate_code(1, i, 2) for i in range(6)]
    p = problems[0]
    responses = [q.response() for q in problems]
    assert grade_programs(problems, responses) == [True] * 6
    cases = {
        "right": (p.response(), True),
        "wrong": (_program("def f(x): return x + 100"), False),
        "off by one": (_program(p.program() + " + 1"), False),
        "never returns": (_program("def f(x):\n    while True:\n        pass"), False),
        "syntax error": (_program("def f(x) return x"), False),
        "no answer block": ("def f(x): return x", False),
        "other name": (_program(p.program().replace("def f(", "def g(")), False),
        "exits 0 before the tests": (_program("import os\nos._exit(0)"), False),
        "forges the result line": (_program(
            "import sys\nsys.stdout.write('\\n@@mindxh-results@@[]\\n')\ndef f(x): return 0"),
            False),
        "returns a float": (_program(p.program().replace("return ", "return 1.0 * (") + ")"),
                            False),
    }
    stats = GradeStats()
    got = grade_programs([p] * len(cases), [r for r, _ in cases.values()], stats=stats)
    assert dict(zip(cases, got)) == {name: ok for name, (_, ok) in cases.items()}
    # the syntax error and the missing block never reach the sandbox; the rest run once each
    assert stats.programs_run == len(cases) - 2 and stats.responses == len(cases)


def test_a_program_cannot_harm_the_programs_graded_after_it():
    """A process a program leaves behind dies before the next program runs (here: one that
    lets go of the result pipe, waits for its parent to exit, then kills everything it can;
    before the fix its program passed and 4 of the 5 after it failed), and a program's printing
    never cuts the driver's result line."""
    p = generate_code(1, 0, 2)
    killer = ("import os, signal, time\nif os.fork() == 0:\n    os.closerange(3, 256)\n"
              "    ppid = os.getppid()\n"
              "    while os.getppid() == ppid: time.sleep(0.001)\n    while True:\n"
              "        try: os.kill(-1, signal.SIGKILL)\n        except OSError: pass\n"
              "        time.sleep(0.005)\n" + p.program())
    honest = [_program(p.program() + f"  # {i}") for i in range(5)]
    assert grade_programs([p] * 6, [_program(killer)] + honest, workers=1) == [True] * 6
    assert run_batch([("print('x' * 70000)\ndef f(x): return x", [1, 2]),
                      ("def f(x):\n    print('y' * 10000)\n    return x", list(range(8)))]) == \
        [["1", "2"], [str(x) for x in range(8)]]


def test_fenced_or_indented_answers_are_read_as_programs():
    p = generate_code(1, 0, 2)
    body = p.program()
    indented = "\n" + "\n".join("    " + line for line in ("def g(x):", "    return x",
                                                            *body.splitlines())) + "\n"
    answers = {"```python": f"```python\n{body}\n```", "```py": f"\n```py\n{body}\n```\n",
               "bare fence": f"```\n{body}```", "indented": indented, "plain": body,
               "first line indented": f" x = 1\n{body}"}
    responses = [f"<think>{p.key}</think><answer>{a}</answer>" for a in answers.values()]
    assert dict(zip(answers, grade_programs([p] * len(answers), responses))) == \
        dict.fromkeys(answers, True)
    assert code.program_of("<answer>```python\ndef f(x):\n    return x\n```</answer>") == \
        "def f(x):\n    return x"


def test_identical_programs_run_once_and_a_hang_costs_only_its_deadline():
    p = generate_code(2, 0, 2)
    stats = GradeStats()
    assert grade_programs([p] * 16, [p.response()] * 16, stats=stats) == [True] * 16
    assert stats.programs_run == 1
    out = run_batch([("def f(x):\n    while True: pass", [1]), ("def f(x): return x", [1, 2])],
                    timeout_s=0.3)
    assert out == [None, ["1", "2"]]


def test_judge_routes_by_task_and_rewards_the_format():
    m = arith.heldout_problems(0, 2, 1)[0]
    c = generate_code(0, 1, 2)
    problems = [m, c, m, c]
    responses = [m.response(), c.response(), "<answer>-1</answer>", "<answer>def f(x): return 0"]
    assert correct(problems, responses) == [True, True, False, False]
    reward, ok = rewards(problems, responses, 0.1)
    assert reward.tolist() == pytest.approx([1.1, 1.1, 0.0, 0.0])


def test_mixture_streams_interleave_and_resume():
    assert cold_start_samples(["math"], 0, 2, 7) == arith.cold_start_samples(0, 2, 7)
    mixed = cold_start_samples(["math", "code"], 0, 2, 5)
    assert len(mixed) == 5 and "f(x)" in mixed[1]["prompt"] and "f(x)" not in mixed[0]["prompt"]
    held = heldout_problems(["math", "code"], 0, 2, 4)
    assert [p.task for p in held] == ["math"] * 4 + ["code"] * 4
    stream = RLStream(["math", "code"], 0, 2, 5)
    first = stream.take()
    assert [p.task for p in first] == ["math", "code", "math", "code", "math"]
    state = stream.state()
    second = stream.take()
    resumed = RLStream(["math", "code"], 0, 2, 5)
    resumed.load_state(state)
    assert [p.question for p in resumed.take()] == [p.question for p in second]
    assert [p.task for p in second] == ["code", "math", "code", "math", "code"]  # turns rotate
    one = RLStream(["math", "code"], 0, 2, 1)  # fewer prompts a step than tasks: alternate,
    tasks = [one.take()[0].task for _ in range(40)]  # whatever held-out problems the streams skip
    assert tasks == ["math", "code"] * 20
    again = RLStream(["math", "code"], 0, 2, 1)
    again.load_state(one.state())
    assert again.take()[0].task == "math" and again.cursors != {"math": 0, "code": 0}
    single = RLStream(["math"], 0, 2, 4)
    single.load_state(8)  # a checkpoint of a math-only run written before mixtures existed
    assert [p.question for p in single.take()] == [p.question for p in
                                                   arith.rl_problems(0, 2, 8, 4)[0]]
    with pytest.raises(ValueError, match="data.tasks"):
        RLStream(["math", "code"], 0, 2, 4).load_state(3)


def test_corpus_of_one_task_is_that_tasks_stream_and_mixtures_resume():
    assert corpus_texts(0, "train", [1], 40) == sample_texts(0, "train", [1], 40)
    make = corpus_source(0, "train", [1], ["math", "code"])
    docs = [d for _, d in zip(range(30), make(0))]
    assert any("f(x)" in t for _, t in docs) and any("f(x)" not in t for _, t in docs)
    index, _ = docs[10]
    assert [t for _, t in zip(range(5), make(index + 1))] == docs[11:16]


def test_eval_result_splits_the_test_set_by_task():
    from mindxh.pipeline.report import _by_task
    from mindxh.pipeline.results import EvalResult, from_dict

    ev = EvalResult(problems=4, accuracy={"sft": 0.5, "grpo": 0.75},
                    correct={"sft": "1100" + "0011", "grpo": "1110" + "0111"},
                    tasks=["math", "code"])
    assert ev.by_task() == {"math": {"sft": 0.5, "grpo": 0.75}, "code": {"sft": 0.5, "grpo": 0.75}}
    table = _by_task(ev)
    assert table["code"]["gains"]["grpo"]["points"] == 25.0
    old = {"problems": 2, "accuracy": {"sft": 0.5}, "correct": {"sft": "10"}}
    assert from_dict(EvalResult, old).tasks == ["math"]  # a result written before tasks existed


def test_a_program_breaking_a_shared_cap_fails_alone():
    """One sandbox run grades a chunk; a program whose children exceed the run's total memory
    gets the run killed, and the chunk is then graded program by program."""
    from dataclasses import replace

    from mindxh.rewards.code import GRADE_LIMITS

    hog = ("import os, time\nfor _ in range(6):\n    if os.fork() == 0:\n"
           "        b = bytearray(60 << 20)\n        time.sleep(5)\n        os._exit(0)\n"
           "def f(x): return x")
    limits = replace(GRADE_LIMITS, memory_mb=150, total_memory_mb=200)
    out = run_batch([(hog, [1]), ("def f(x): return x + 1", [1, 2])], 0.5, limits)
    assert out == [None, ["2", "3"]]


def test_code_errors_tell_a_misread_spec_from_a_wrong_program():
    from mindxh.tasks.code import code_error, code_error_table

    p = generate_code(0, 3, 2)
    rec = {"plan": p.key, "correct": False}
    assert code_error({**rec, "response": p.response()}) == "code: program"
    bad_plan = p.response().replace(p.key, p.key + " , +1")
    assert code_error({**rec, "response": bad_plan}) == "code: plan"
    assert code_error({**rec, "response": "def f(x): return x"}) == "code: format"
    table = code_error_table([{**rec, "response": bad_plan},
                              {**rec, "response": p.response(), "correct": True}])
    assert table == {"code: format": 0, "code: plan": 1, "code: program": 0}
