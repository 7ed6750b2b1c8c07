"""The deployments declared in ``prefect.yaml``, read and checked without importing Prefect.

``prefect.yaml`` is the one definition (``prefect --no-prompt deploy --all`` reads it); this
module reads it for ``tgflow server``, which must know the work pools to create before
deploying, and reports a broken file as one readable error instead of a Prefect traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks_lib.errors import UsageError, describe_validation_error

PREFECT_FILE = "prefect.yaml"
FLOW_NAME = "tgflow"
MANUAL = "manual"
NIGHTLY = "nightly"
# flows/message_flow.py's flow and its deployment: a person's message to one node of a run
MESSAGE_FLOW = "tgflow-node-message"
MESSAGE = "message"


class WorkPoolRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class DeploymentSpec(BaseModel):
    """The keys tgflow relies on; every other key is passed to Prefect untouched."""

    model_config = ConfigDict(extra="allow")
    name: str
    entrypoint: str
    work_pool: WorkPoolRef
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[dict[str, Any]] = Field(default_factory=list)
    concurrency_limit: int | dict[str, Any] | None = None


class PrefectProject(BaseModel):
    model_config = ConfigDict(extra="allow")
    deployments: list[DeploymentSpec]

    @property
    def work_pools(self) -> list[str]:
        return sorted({d.work_pool.name for d in self.deployments})

    def deployment(self, name: str) -> DeploymentSpec:
        for spec in self.deployments:
            if spec.name == name:
                return spec
        raise KeyError(name)


class ProjectFileError(UsageError):
    """``prefect.yaml`` cannot be used as it is: the message says where, and what to fix."""


def tgflow_root() -> Path:
    """The folder holding tgflow's packages, where its ``prefect.yaml`` sits: the checkout of
    an editable install. Deploying from here resolves the entrypoint ``flows/graph_flow.py``
    whatever folder ``tgflow server`` was started in."""
    return Path(__file__).resolve().parent.parent


def load_project(root: Path, prefect_file: str = PREFECT_FILE) -> PrefectProject:
    """Read ``root/prefect.yaml``; check that every entrypoint's file exists."""
    path = root / prefect_file
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProjectFileError(
            f"{path}: cannot read tgflow's deployment file ({exc.strerror}); pass --root with "
            "the folder of tgflow's checkout that holds it (tgflow installed with pip -e finds "
            "it itself)"
        ) from exc
    except yaml.YAMLError as exc:
        raise ProjectFileError(f"{path}: not valid YAML: {exc}") from exc
    try:
        project = PrefectProject.model_validate(raw)
    except ValidationError as exc:
        raise ProjectFileError(f"{path}: " + "; ".join(describe_validation_error(exc))) from exc
    for spec in project.deployments:
        file = spec.entrypoint.rsplit(":", 1)[0]
        if not (root / file).is_file():
            raise ProjectFileError(
                f"{path}: deployment {spec.name!r}: entrypoint file {file} does not exist"
            )
    return project
