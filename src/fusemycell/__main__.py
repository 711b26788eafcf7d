"""``fusemycell`` and ``python -m fusemycell``: the project's commands (``run``, ``predict``) outside ``kedro``."""

from pathlib import Path
from typing import Any

from fusemycell.run_messages import silence_known_notices

# before Kedro is imported: outside a project it logs which logging configuration it took
silence_known_notices()

from kedro.framework.project import configure_project  # noqa: E402


def main(*args, **kwargs) -> Any:
    """``fusemycell run ...`` (as ``kedro run``) and ``fusemycell predict INPUT OUTPUT``."""
    configure_project(Path(__file__).parent.name)
    from fusemycell.cli import cli

    return cli(*args, **kwargs)


if __name__ == "__main__":
    main()
