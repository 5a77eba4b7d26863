"""Interchange with other ecosystems: Hugging Face checkpoints both ways (`hf`), read and
written without torch (`safetensors_io`), configs mapped strictly (`hf_config`)."""
