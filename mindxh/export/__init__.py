"""Export: a trained model as files other runtimes load (MindIR for MindSpore Lite / serving)."""
