"""mindxh: MindSpore-native, recipe-driven training of reasoning LLMs."""

__version__ = "0.1.0"
