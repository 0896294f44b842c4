"""Analyses: pandas frames in, KPI frames and dataclasses out; no printing."""
