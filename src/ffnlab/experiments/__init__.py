"""Experiments: each claim of the study as a test with a pre-registered criterion."""

from ffnlab.experiments.registry import EXPERIMENTS, Context, experiment, load_all, run_experiment

__all__ = ["EXPERIMENTS", "Context", "experiment", "load_all", "run_experiment"]
