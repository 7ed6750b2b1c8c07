"""Prefect flows: thin wrappers that map tasks_lib onto Prefect runs, tasks and artifacts."""

from flows.graph_flow import tgflow_run

__all__ = ["tgflow_run"]
