"""The README's quickstart is exactly three commands, and CI runs the same install and test commands."""

import re

from tests.conftest import PROJECT_ROOT


def _quickstart_commands() -> list[str]:
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the quickstart holds one code block"
    return [line.strip() for line in blocks[0].splitlines() if line.strip() and not line.strip().startswith("#")]


def test_quickstart_is_install_run_test():
    install, run, test = _quickstart_commands()
    assert install.startswith("pip install")
    assert run.startswith("kedro run")
    assert test.startswith("pytest")


def test_ci_runs_the_readme_install_and_test_commands():
    install, _, test = _quickstart_commands()
    ci_lines = [line.strip() for line in (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()]
    assert install in ci_lines
    assert test in ci_lines
    assert ci_lines.index("python -m pip install --quiet torch==2.13.0") < ci_lines.index(install)


def test_the_quickstart_block_itself_names_the_cpu_only_and_intel_mac_step():
    readme = (PROJECT_ROOT / "README.md").read_text()
    block = re.findall(r"```bash\n(.*?)```", readme.split("## Quickstart", 1)[1], flags=re.DOTALL)[0]
    comments = [line for line in block.splitlines() if line.startswith("#")]
    assert any("pip install torch --index-url https://download.pytorch.org/whl/cpu" in line for line in comments)
    assert any("Intel Mac" in line and "conda-forge" in line for line in comments)
    install = (PROJECT_ROOT / "docs" / "install.md").read_text()
    assert "Intel Mac" in install and "conda-forge" in install
