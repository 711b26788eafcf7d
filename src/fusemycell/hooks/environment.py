"""The chosen environment exists, and its training device is there, before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from fusemycell.errors import UserError
from fusemycell.hooks.parameters import ParameterHooks


class UnknownEnvironmentError(UserError):
    """``--env`` names an environment that has no folder under ``conf/``."""


def environment_problem(conf: Path, env: str | None, base: str = "base") -> str | None:
    """Why ``env`` is not an environment of the configuration folder ``conf`` (None: it is, or cannot be told)."""
    if not env or not conf.is_dir() or (conf / env).is_dir():
        return None
    known = sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name != base and not p.name.startswith("."))
    return (
        f"environment {env!r} not found: {conf / env} does not exist. "
        f"Environments of this project: {', '.join(known)} (e.g. --env mac on a laptop, --env cloud on GPUs)"
    )


class EnvironmentCheckHooks:
    """Stop at once, with the list of environments, when ``--env`` names one that does not exist.

    Without it Kedro runs with the base configuration alone and kedro-mlflow falls back
    to a ``./mlruns`` store that MLflow refuses, an error that says nothing about the typo.
    """

    def __init__(self, parameters: ParameterHooks) -> None:
        self.parameters = parameters

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        loader = context.config_loader
        env = getattr(loader, "env", None) or getattr(loader, "default_run_env", None)
        problem = environment_problem(
            Path(str(getattr(loader, "conf_source", ""))), env, getattr(loader, "base_env", None) or "base"
        )
        if problem is not None:
            raise UnknownEnvironmentError(problem)

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, pipeline: Any) -> None:
        """Check the training device before any node runs, not hours later when training starts.

        ``--env cloud`` on a machine without a CUDA GPU would otherwise run simulation,
        preprocessing and patching first, then fail. (Runs after the parameters are checked.)
        """
        parameters = self.parameters.parameters
        if parameters is None or "params:training" not in pipeline.inputs():
            return
        from fusemycell.devices import resolve_device

        resolve_device(str(parameters.training.device))
