"""`mindxh bench`: mindxh against its peers, side by side, in one invocation.

    spec.py       the shapes, optimizer, data and FLOPs every peer shares (defined once)
    child.py      one measurement per process (`python -m mindxh.bench.child JOB PARAMS`)
    train_jobs.py the train step in mindxh (graph, PyNative), torch (eager, compile), mindformers
    gen_jobs.py   cached decoding, recomputation, transformers' generate
    grpo_job.py   the tiny X1 GRPO step split into sampling, reward and update
    harness.py    child processes, alternated rounds, medians (no framework imports)
    sections.py   rounds -> rows; report.py rows -> Markdown; runner.py the whole run
Layer: with pipeline and launch (it drives train, generate, rl, models and interop).
docs/performance.md explains the columns and the goals.
"""
