"""Validation of angle/fused pairs before any heavy work: every problem, in one report.

Errors make a pair unusable (the ``on_invalid`` policy then stops the run or
leaves the pair out); warnings are reported and the pair is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fusemycell.io.pairs import PairListing
from fusemycell.io.volume import raw_dtype_problem
from fusemycell.preprocessing.fingerprint import VolumeScan


@dataclass(frozen=True)
class Problem:
    """One finding about one pair (or one file)."""

    pair: str
    file: str
    problem: str
    severity: str  # "error" | "warning"


@dataclass
class ValidationReport:
    """All findings, and which pairs can be used."""

    pairs_found: int
    valid_pairs: list[str]
    problems: list[Problem] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        """Findings that make a pair unusable."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def invalid_pairs(self) -> list[str]:
        """Pairs with at least one error."""
        return sorted({p.pair for p in self.errors})

    def to_dict(self, policy: str) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "policy": policy,
            "pairs_found": self.pairs_found,
            "valid_pairs": self.valid_pairs,
            "invalid_pairs": self.invalid_pairs,
            "errors": len(self.errors),
            "warnings": len(self.problems) - len(self.errors),
            "problems": [asdict(p) for p in self.problems],
            "ignored_files": self.ignored_files,
        }

    def describe(self) -> str:
        """Every problem on its own line, for an error message or a log."""
        return "\n".join(f"  - [{p.severity}] {p.pair}: {p.problem} ({p.file})" for p in self.problems)


def validate_pairs(
    listing: PairListing,
    scans: Mapping[str, VolumeScan],
    *,
    patch_size_zyx: Sequence[int],
    spacing_tolerance: float = 0.01,
) -> ValidationReport:
    """Check every pair of ``listing`` against its scans (keyed by file stem).

    Errors: unreadable file, missing angle or fused, duplicate id, unknown
    channel in a file name, angle/fused shape mismatch, a voxel type that is
    not a raw one (:data:`~fusemycell.io.volume.RAW_DTYPES`), non-finite voxels,
    constant image. Warnings: angle/fused voxel sizes that disagree (the
    angle's is used), no voxel size in the file, voxel-size sources of one file that disagree
    (the value used is named), a channel in the metadata that
    contradicts the name, a volume smaller than the patch in some axis (it is
    padded when patches are cut).
    """
    problems: list[Problem] = []
    ignored: list[str] = []

    def add(pair: str, file: str, problem: str, severity: str = "error") -> None:
        problems.append(Problem(pair=pair, file=file, problem=problem, severity=severity))

    for entry in listing.unmatched:
        if "unknown channel" in entry:
            name = entry.split(" (", 1)[0]
            add(name.rsplit("_", 1)[0], name, entry.split(" (", 1)[1].rstrip(")"))
        else:
            ignored.append(entry)
    for slot, files in listing.duplicates.items():
        add(slot.rsplit("_", 1)[0], " and ".join(files), f"duplicate id: {len(files)} files are {slot}")

    for key, pair in listing.pairs.items():
        if pair.angle is None or pair.fused is None:
            missing, present = ("angle", pair.fused) if pair.angle is None else ("fused", pair.angle)
            add(key, str(present), f"missing {missing} volume (have only {present})")
            continue
        problems.extend(
            _check_pair(
                key,
                pair.channel,
                scans[f"{key}_angle"],
                scans[f"{key}_fused"],
                patch_size_zyx=patch_size_zyx,
                spacing_tolerance=spacing_tolerance,
            )
        )

    invalid = {p.pair for p in problems if p.severity == "error"}
    valid = sorted(key for key in listing.pairs if key not in invalid)
    return ValidationReport(pairs_found=len(listing.pairs), valid_pairs=valid, problems=problems, ignored_files=ignored)


def _check_pair(
    key: str,
    channel: str,
    angle: VolumeScan,
    fused: VolumeScan,
    *,
    patch_size_zyx: Sequence[int],
    spacing_tolerance: float,
) -> list[Problem]:
    """Findings for one complete pair."""
    found: list[Problem] = []

    def add(file: str, problem: str, severity: str = "error") -> None:
        found.append(Problem(pair=key, file=file, problem=problem, severity=severity))

    unreadable = [scan for scan in (angle, fused) if scan.error is not None]
    for scan in unreadable:
        add(scan.path, f"unreadable: {scan.error}")
    readable = [scan for scan in (angle, fused) if scan.error is None]
    if not unreadable:  # the pair's own checks need both files
        if angle.shape != fused.shape:
            add(fused.path, f"angle shape {angle.shape} and fused shape {fused.shape} differ")
        spacing_diff = max(abs(a - f) / max(a, f) for a, f in zip(angle.spacing_zyx, fused.spacing_zyx))
        if spacing_diff > spacing_tolerance:
            add(
                fused.path,
                f"voxel sizes disagree: angle {_fmt(angle.spacing_zyx)} um, fused {_fmt(fused.spacing_zyx)} um; "
                "they share one grid, the angle's is used",
                "warning",
            )
    for scan in readable:  # a readable file's own problems are reported even when its partner is unreadable
        for problem, severity in _file_problems(scan, channel, is_fused=scan is fused):
            add(scan.path, problem, severity)
    if angle.error is None:
        small = [
            f"{axis}: {size} < {patch}" for axis, size, patch in zip("zyx", angle.shape, patch_size_zyx) if size < patch
        ]
        if small:
            add(angle.path, f"smaller than the patch ({', '.join(small)}); padded when patches are cut", "warning")
    return found


def _file_problems(scan: VolumeScan, channel: str, *, is_fused: bool) -> list[tuple[str, str]]:
    """``(problem, severity)`` of one readable file on its own."""
    found: list[tuple[str, str]] = []
    dtype_problem = raw_dtype_problem(scan.dtype)
    if dtype_problem:
        found.append((dtype_problem, "error"))
    if scan.nonfinite:
        found.append((f"{scan.nonfinite} non-finite voxels (NaN or Inf)", "error"))
    if scan.is_constant:
        found.append((f"constant image (every voxel is {scan.minimum:g})", "error"))
    found += [(warning, "warning") for warning in _spacing_warnings(scan)]
    if scan.prediction_mark:
        role = "the fused ground truth" if is_fused else "a single view to learn from"
        found.append(
            (
                f"a prediction, not an acquisition: its metadata says {scan.prediction_mark!r}; it cannot be "
                f"{role} (move it out of the raw folder)",
                "error" if is_fused else "warning",
            )
        )
    if scan.metadata_channel and scan.metadata_channel.lower() != channel:
        found.append((f"metadata says channel {scan.metadata_channel!r} but the name says {channel!r}", "warning"))
    return found


def _spacing_warnings(scan: VolumeScan) -> list[str]:
    """The documented voxel-size fallbacks a readable file needed: none found, or sources that disagree."""
    found = [] if scan.spacing_found else ["no voxel size in the file; 1.0 um assumed"]
    return found + [f"conflicting {conflict}" for conflict in scan.spacing_conflicts]


def _fmt(spacing: Sequence[float]) -> str:
    return "x".join(f"{s:g}" for s in spacing)
