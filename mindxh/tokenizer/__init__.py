"""Tokenizers: SentencePiece with the reasoning special tokens."""

from mindxh.tokenizer.spm import REASONING_TOKENS, Tokenizer, train, train_from_texts

__all__ = ["REASONING_TOKENS", "Tokenizer", "train", "train_from_texts"]
