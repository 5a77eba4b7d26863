"""`mindxh generate --checkpoint PATH --prompt TEXT ...`: complete prompts with a trained model.

`--mindir DIR` runs the graphs `mindxh export` wrote instead (no recipe, no checkpoint: only
DIR's manifest, .mindir files and tokenizer), through the same host loop, so greedy decoding
gives the same tokens. The cache length is then the export's `max_len`.

Each prompt is formatted as the chat template's single user turn (`prompt_ids`), so the
model answers it the way it was trained to. Completions go to stdout (text, or JSON lines
with `--json`); speed goes to the log on stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mindxh.cli.recipe_cmd import seed_int
from mindxh.errors import MindxhError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("generate", help="complete prompts with a trained checkpoint")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint",
                        help="a run directory (its newest checkpoint) or RUN/checkpoints/step-N")
    source.add_argument("--mindir", type=Path, help="a directory written by `mindxh export`")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    parser.add_argument("--prompts-file", type=Path,
                        help='JSON lines, each {"prompt": TEXT} or a JSON string')
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    parser.add_argument("--top-k", type=int, default=0, help="0 is off")
    parser.add_argument("--top-p", type=float, default=1.0, help="1.0 is off")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--batch-size", type=int, default=32, help="rows decoded together")
    parser.add_argument("--json", action="store_true", help="one JSON object per completion")
    parser.add_argument("--pynative", action="store_true", help="PyNative mode (debugging; ~6x slower)")
    parser.add_argument("--device", default="CPU", choices=["CPU", "Ascend", "GPU"])
    parser.set_defaults(func=run)


class PromptError(MindxhError):
    """Prompts or options of `mindxh generate` that cannot be used as given."""


def _read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file is not None:
        try:
            data = args.prompts_file.read_bytes()
        except OSError as exc:
            raise PromptError(f"--prompts-file {args.prompts_file}: {exc.strerror}") from None
        try:
            lines = data.decode("utf-8-sig").split("\n")  # not splitlines(): JSON strings may
            # hold U+2028/U+2029/U+0085 unescaped, which it takes for line ends
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise PromptError(f"{args.prompts_file}, line {line}: not UTF-8 text") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{args.prompts_file}, line {number}"
            try:
                item = json.loads(line)
            except ValueError:
                raise PromptError(f"{where}: not valid JSON") from None
            if isinstance(item, dict):
                item = item.get("prompt")
            if not isinstance(item, str):
                raise PromptError(f'{where}: expected {{"prompt": TEXT}} or a JSON string')
            prompts.append(item)
    for i, text in enumerate(prompts):  # a lone surrogate: JSON's \ud800, or a non-UTF-8 argv
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PromptError(f"prompt {i} is not valid Unicode text (a lone surrogate at "
                              f"character {exc.start}; a --prompt in an encoding other than "
                              "UTF-8?)") from None
    if not prompts:
        raise PromptError("no prompts: pass --prompt TEXT or --prompts-file FILE.jsonl")
    return prompts


def _configure(args: argparse.Namespace) -> None:
    import mindspore as ms

    ms.set_device(args.device)
    ms.set_context(mode=ms.PYNATIVE_MODE if args.pynative else ms.GRAPH_MODE)


def run(args: argparse.Namespace) -> int:
    from mindxh.generate import Generator, SamplingConfig

    cfg = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                         top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    if args.batch_size < 1:
        raise PromptError(f"--batch-size must be >= 1, got {args.batch_size}")
    texts = _read_prompts(args)

    from mindxh.data.chat import prompt_ids

    _configure(args)
    batch_size = min(args.batch_size, len(texts))
    if args.mindir is not None:
        from mindxh.generate.mindir import load_generator

        generator, _ = load_generator(args.mindir, batch_size)
        prompts = [prompt_ids(generator.tokenizer, t) for t in texts]
        source = args.mindir
    else:
        from mindxh.checkpoint.inference import load_for_inference

        model, tok, recipe, source = load_for_inference(args.checkpoint)
        prompts = [prompt_ids(tok, t) for t in texts]
        # the cache as long as this call needs, within what the model's positions allow
        max_len = min(max(len(p) for p in prompts) + cfg.max_new_tokens, recipe.model.max_seq_len + 1)
        generator = Generator(model, tok, batch_size, max_len)
    completions = generator.generate(prompts, cfg)
    stats = generator.last_stats
    log.info("%s: %d completions, %d tokens in %.2fs (%.0f tokens/s, compilation included)",
             source, len(completions), stats.new_tokens, stats.wall_s, stats.tokens_per_s)
    for text, c in zip(texts, completions):
        if args.json:
            print(json.dumps({"prompt": text, "completion": c.text, "finish_reason": c.finish_reason,
                              "ids": c.ids, "logprobs": [round(x, 6) for x in c.logprobs]}))
        else:
            print(c.text if len(texts) == 1 else f"{c.text}\n")
    return 0
