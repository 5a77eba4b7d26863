"""Splitting a model over devices: the MindSpore settings a recipe implies (context.py),
a family's plan applied to a built model (parallelize.py), the train step's pipeline
wrapper and gradient reducer (pipeline.py), and a NumPy replay of tensor parallel that
checks a plan's splits and collectives (simulate.py)."""
