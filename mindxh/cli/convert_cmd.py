"""`mindxh convert`: Hugging Face (`hf-to-mindxh`, `mindxh-to-hf`) and mindformers
(`mindformers-to-mindxh`, `mindxh-to-mindformers`, `mindformers-recipe`) checkpoints.

Bringing a published model into a recipe (SFT or GRPO via `train.init_from`) and handing a
trained one back to the Hugging Face or mindformers ecosystem; docs/interop.md has the details.
"""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("convert", help="convert checkpoints to and from Hugging Face "
                            "and mindformers")
    kinds = parser.add_subparsers(dest="convert_command", required=True)
    to_mx = kinds.add_parser("hf-to-mindxh", help="a Hugging Face model directory -> a mindxh "
                             "checkpoint directory with recipe.yaml and the tokenizer")
    to_mx.add_argument("hf_dir", help="holds config.json, model.safetensors (or shards + "
                       "model.safetensors.index.json) and tokenizer.json or tokenizer.model")
    to_mx.add_argument("out", help="the new checkpoint directory (must not exist, or be empty)")
    to_mx.add_argument("--tokenizer", help="a tokenizer.json or SentencePiece .model to use "
                       "instead of the one in HF_DIR")
    to_mx.add_argument("--max-seq-len", type=int, default=4096,
                       help="cap on model.max_seq_len (RoPE and mask tables; default 4096)")
    to_mx.set_defaults(func=_hf_to_mindxh)
    to_hf = kinds.add_parser("mindxh-to-hf", help="a mindxh checkpoint or run directory -> a "
                             "Hugging Face model directory")
    to_hf.add_argument("checkpoint", help="RUN (its newest checkpoint) or RUN/checkpoints/step-N")
    to_hf.add_argument("out", help="the new model directory (must not exist, or be empty)")
    to_hf.add_argument("--dtype", default="auto",
                       choices=["auto", "float32", "bfloat16", "float16"],
                       help="weights' dtype; auto: the original's for a converted model, "
                       "else float32")
    to_hf.set_defaults(func=_mindxh_to_hf)
    _register_mindformers(kinds)


def _hf_to_mindxh(args: argparse.Namespace) -> int:
    from mindxh.interop.hf import hf_to_mindxh

    if args.max_seq_len <= 0:
        from mindxh.interop.hf import ConversionError

        raise ConversionError(f"--max-seq-len must be positive, got {args.max_seq_len}")
    out = hf_to_mindxh(args.hf_dir, args.out, args.tokenizer, args.max_seq_len)
    print(out)
    return 0


def _mindxh_to_hf(args: argparse.Namespace) -> int:
    from mindxh.interop.hf import mindxh_to_hf

    print(mindxh_to_hf(args.checkpoint, args.out, args.dtype))
    return 0


def _register_mindformers(kinds: argparse._SubParsersAction) -> None:
    from_mf = kinds.add_parser("mindformers-to-mindxh", help="a mindformers Llama checkpoint "
                               "(.ckpt or .safetensors) and its YAML -> a mindxh checkpoint "
                               "directory with recipe.yaml and the tokenizer")
    from_mf.add_argument("checkpoint", help="the mindformers .ckpt or .safetensors file "
                         "(fused w_qkv/w_gate_hidden or not; optimizer state is skipped)")
    from_mf.add_argument("out", help="the new checkpoint directory (must not exist, or be empty)")
    from_mf.add_argument("--config", required=True, help="the mindformers YAML whose "
                         "'model: model_config:' describes the checkpoint")
    from_mf.add_argument("--tokenizer", help="a SentencePiece .model or tokenizer.json; default: "
                         "the YAML's processor.tokenizer.vocab_file")
    from_mf.add_argument("--max-seq-len", type=int, default=4096,
                         help="cap on model.max_seq_len (RoPE and mask tables; default 4096)")
    from_mf.set_defaults(func=_mindformers_to_mindxh)
    to_mf = kinds.add_parser("mindxh-to-mindformers", help="a mindxh checkpoint or run "
                             "directory -> model.ckpt, model.yaml and the tokenizer for "
                             "mindformers")
    to_mf.add_argument("checkpoint", help="RUN (its newest checkpoint) or RUN/checkpoints/step-N")
    to_mf.add_argument("out", help="the new directory (must not exist, or be empty)")
    to_mf.add_argument("--qkv-concat", action=argparse.BooleanOptionalAction, default=None,
                       help="write fused attention.w_qkv and feed_forward.w_gate_hidden (the "
                       "YAML then says qkv_concat: true); default: the original's layout for a "
                       "model converted from mindformers, else unfused")
    to_mf.add_argument("--dtype", default="auto",
                       choices=["auto", "float32", "bfloat16", "float16"],
                       help="weights' dtype; auto: the original's param_init_type for a model "
                       "converted from mindformers, else float32")
    to_mf.add_argument("--format", default="ckpt", choices=["ckpt", "safetensors"],
                       help="model.ckpt (MindSpore) or model.safetensors; default ckpt")
    to_mf.set_defaults(func=_mindxh_to_mindformers)
    recipe = kinds.add_parser("mindformers-recipe", help="print the mindxh recipe for a "
                              "mindformers YAML's model (no weights needed)")
    recipe.add_argument("config", help="the mindformers YAML ('model: model_config:')")
    recipe.add_argument("--tokenizer", help="tokenizer file for the recipe; default: the YAML's")
    recipe.add_argument("--max-seq-len", type=int, default=4096,
                        help="cap on model.max_seq_len (default 4096)")
    recipe.set_defaults(func=_mindformers_recipe)


def _check_max_seq_len(value: int) -> None:
    if value <= 0:
        from mindxh.interop.hf import ConversionError

        raise ConversionError(f"--max-seq-len must be positive, got {value}")


def _mindformers_to_mindxh(args: argparse.Namespace) -> int:
    from mindxh.interop.mindformers import mindformers_to_mindxh

    _check_max_seq_len(args.max_seq_len)
    print(mindformers_to_mindxh(args.checkpoint, args.config, args.out, args.tokenizer,
                                args.max_seq_len))
    return 0


def _mindxh_to_mindformers(args: argparse.Namespace) -> int:
    from mindxh.interop.mindformers import mindxh_to_mindformers

    print(mindxh_to_mindformers(args.checkpoint, args.out, args.qkv_concat, args.dtype,
                                args.format))
    return 0


def _mindformers_recipe(args: argparse.Namespace) -> int:
    from mindxh.interop.mindformers import mindformers_recipe

    print(mindformers_recipe(args.config, args.tokenizer, args.max_seq_len), end="")
    return 0
