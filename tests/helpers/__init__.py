"""Shared test helpers: real repositories, the fake model server, the Prefect and UI harnesses."""
