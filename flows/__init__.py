"""The Prefect layer: the graph flow, its run context, the Prefect server tgflow starts.

Nothing is imported here, so `tgflow server` and other light users of one module do not
load Prefect through this package.
"""
