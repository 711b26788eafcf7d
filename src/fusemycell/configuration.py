"""Turning a parameter group from the Kedro YAML into a typed, validated config object."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError


class StrictConfig(BaseModel):
    """Base of every typed contract, parameters and the model card alike: frozen, and an unknown (misspelt)
    key is an error, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Config = TypeVar("Config", bound=BaseModel)


def load_config(model: type[Config], values: dict[str, Any] | None, name: str) -> Config:
    """Validate ``params:<name>`` against ``model``.

    Raises
    ------
    ValueError
        Naming the YAML file and every bad field, e.g.
        ``invalid parameters under 'patching' ... patch_size_zyx: ...``.
    """
    try:
        return model.model_validate(values or {})
    except ValidationError as exc:
        raise ValueError(f"invalid parameters under '{name}' (conf/base/parameters_{name}.yml):\n{exc}") from None
