"""Analyses that work on any model exposing ffnlab's hook names (own models and pretrained adapters)."""
