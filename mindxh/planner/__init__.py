"""`mindxh plan`: will a recipe's parallel plan fit, what will it send where, how fast will it
run, on named accelerators, before anything is compiled (no MindSpore needed)."""
from mindxh.planner.load import load_for_plan
from mindxh.planner.params import parameter_counts
from mindxh.planner.plan import HardwareError, Plan, make_plan, profile_for
from mindxh.planner.report import render, render_side_by_side, side_by_side_dict

__all__ = ["HardwareError", "Plan", "load_for_plan", "make_plan", "parameter_counts",
           "profile_for", "render", "render_side_by_side", "side_by_side_dict"]
