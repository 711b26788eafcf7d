"""``fusemycell`` and ``python -m fusemycell``: the project's commands (``run``, ``predict``) outside ``kedro``."""

from pathlib import Path
from typing import Any

from kedro.framework.project import configure_project


def main(*args, **kwargs) -> Any:
    """``fusemycell run ...`` (as ``kedro run``) and ``fusemycell predict INPUT OUTPUT``."""
    configure_project(Path(__file__).parent.name)
    from fusemycell.cli import cli

    return cli(*args, **kwargs)


if __name__ == "__main__":
    main()
