"""What every benchmark script measures with: peak memory, page cache, child processes, the machine.

The scripts run as ``python benchmarks/<name>.py``, so this module is importable
as ``_measure`` from them (and from their ``--measure`` children).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[1]


def mac_unet_config(**updates: Any) -> Any:
    """The ``mac`` environment's U-Net (``conf/base`` then ``conf/mac``, merged as Kedro merges them), with
    ``updates``: the one place the benchmarks take the laptop network from, so it never drifts from the
    configuration (``gain_offset`` and all)."""
    import yaml

    from fusemycell.training.config import TrainingConfig

    def merged(base: dict, override: dict) -> dict:
        out = dict(base)
        for key, value in override.items():
            out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    base = yaml.safe_load((ROOT / "conf" / "base" / "parameters_training.yml").read_text())["training"]
    mac = (yaml.safe_load((ROOT / "conf" / "mac" / "parameters.yml").read_text()) or {}).get("training", {})
    return TrainingConfig.model_validate(merged(base, mac)).model.model_copy(update=updates)


# -- files and the page cache -------------------------------------------------------------------
def fsync_file(path: Path) -> None:
    """Flush ``path`` to disk (so that a later cache drop can evict all of it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_from_page_cache(path: Path) -> None:
    """Ask the kernel to forget the cached pages of ``path`` (clean pages only; no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_through(path: Path) -> None:
    """Read ``path`` once so that its pages are in the OS page cache."""
    with path.open("rb") as handle:
        while handle.read(64 * MIB):
            pass


# -- memory of this process ---------------------------------------------------------------------
def ru_maxrss_kib() -> int:
    """``ru_maxrss`` of this process, in KiB (the Linux unit).

    On Linux it is *not* this program's own peak when the process was started
    by ``fork``/``vfork`` + ``exec`` (as :mod:`subprocess` does): the kernel
    keeps the maximum over the pre-``exec`` memory image too, which is the
    parent's. It is reported for comparison only.
    """
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss_kib() -> int:
    """Peak resident set size of this process image, in KiB (``VmHWM``; ``ru_maxrss`` without ``/proc``).

    ``VmHWM`` in ``/proc/self/status`` belongs to the memory image created by
    ``exec``, so, unlike ``ru_maxrss``, it does not inherit the parent's peak.
    It counts file pages mapped in (a memory-mapped read) as well as anonymous memory.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return ru_maxrss_kib()


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (``/proc/self/clear_refs``, Linux >= 4.0); return whether it worked.

    It lets one process report the peak of each phase of a run separately.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# -- child processes ----------------------------------------------------------------------------
def run_measurement(script: str, arguments: list[str], what: str, *, show_log: bool = False, **options: Any) -> dict:
    """Run ``script`` with ``arguments`` in a fresh interpreter; return the JSON of its last stdout line.

    ``show_log`` leaves the child's stderr on the terminal (a training log) instead of
    capturing it for the error message. ``options`` go to :func:`subprocess.run`.
    """
    command = [sys.executable, str(Path(script).resolve()), *arguments]
    stderr = None if show_log else subprocess.PIPE
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, text=True, check=False, **options)
    if result.returncode != 0:
        detail = f" (exit status {result.returncode})" if show_log else f":\n{result.stderr}"
        raise RuntimeError(f"{what} failed{detail}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- the machine --------------------------------------------------------------------------------
def _proc_value(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def total_ram() -> str:
    """Total RAM in GiB, from ``/proc/meminfo`` (``unknown`` elsewhere)."""
    value = _proc_value("/proc/meminfo", "MemTotal:")
    return f"{int(value.split()[0]) / 1024**2:.1f} GiB" if value else "unknown"


def cpu_model() -> str:
    """The CPU's model name, from ``/proc/cpuinfo``."""
    return _proc_value("/proc/cpuinfo", "model name") or platform.processor() or "unknown"


def machine_description(versions: str, cpus: str | None = None) -> list[str]:
    """Markdown list lines: platform, CPUs (``cpus`` replaces the default line), RAM, library ``versions``."""
    return [
        f"- platform: {platform.platform()}",
        cpus or f"- CPUs: {os.cpu_count()}",
        f"- RAM: {total_ram()}",
        f"- python {platform.python_version()}, {versions}",
    ]


def revision_tree(revision: str, workdir: Path, root: Path) -> Path:
    """The source tree of ``revision`` of the repository at ``root``, extracted once with ``git archive``."""
    tree = workdir / f"code_{revision}"
    if not tree.exists():
        archive = subprocess.run(["git", "archive", revision], cwd=root, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tree, filter="data")
    return tree


def checkout_revision(root: Path) -> str:
    """The commit ``root`` is at (short hash), with ``+uncommitted`` when its tracked files differ from it."""
    import subprocess

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+uncommitted" if git("status", "--porcelain", "--untracked-files=no") else "")
