"""Finding FuseMyCell angle/fused pairs in a folder by file name.

The challenge names files ``image_{N}_{nucleus|membrane}_{angle|fused}.tif``.
An *angle* is the single view (the network input), *fused* the multi-view
fusion (the target); both share one voxel grid. This module pairs them by
``(N, channel)`` and reports, by name, everything that does not fit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fusemycell.errors import UserError

logger = logging.getLogger(__name__)

#: The channels of the challenge.
CHANNELS = ("nucleus", "membrane")
#: The two roles of a file in a pair.
KINDS = ("angle", "fused")

FILENAME_PATTERN = re.compile(
    r"^image_(?P<image_id>\d+)_(?P<channel>[A-Za-z]+)_(?P<kind>angle|fused)\.(tiff?|ome\.zarr)$", re.IGNORECASE
)


class PairingError(UserError):
    """A file name or a set of files cannot be paired; the message names them."""


@dataclass(frozen=True)
class FileName:
    """The parts of a FuseMyCell file name."""

    image_id: int
    channel: str
    kind: str

    @property
    def pair_key(self) -> str:
        """Identifier shared by an angle and its fused volume, e.g. ``image_3_nucleus``."""
        return pair_key(self.image_id, self.channel)

    def filename(self, suffix: str = ".tif") -> str:
        """The file name, e.g. ``image_3_nucleus_angle.tif``."""
        return f"{self.pair_key}_{self.kind}{suffix}"


def pair_key(image_id: int, channel: str) -> str:
    """Identifier of a pair, ``image_{N}_{channel}``."""
    return f"image_{int(image_id)}_{channel}"


def parse_filename(name: str) -> FileName:
    """Parse ``image_{N}_{channel}_{angle|fused}.tif``.

    Raises
    ------
    PairingError
        If the name does not follow the pattern or names an unknown channel.
    """
    match = FILENAME_PATTERN.match(Path(name).name)
    if match is None:
        raise PairingError(
            f"{name}: not a FuseMyCell file name; expected image_{{N}}_{{nucleus|membrane}}_{{angle|fused}}.tif"
        )
    channel = match["channel"].lower()
    if channel not in CHANNELS:
        raise PairingError(f"{name}: unknown channel {match['channel']!r}; expected one of {', '.join(CHANNELS)}")
    return FileName(image_id=int(match["image_id"]), channel=channel, kind=match["kind"].lower())


@dataclass(frozen=True)
class RawPair:
    """One acquisition: the single view (``angle``) and, when present, its fusion (``fused``)."""

    image_id: int
    channel: str
    angle: str | None
    fused: str | None

    @property
    def key(self) -> str:
        """Identifier, e.g. ``image_3_nucleus``."""
        return pair_key(self.image_id, self.channel)

    @property
    def is_complete(self) -> bool:
        """True when both the angle and the fused file are present."""
        return self.angle is not None and self.fused is not None


@dataclass(frozen=True)
class PairListing(Mapping[str, RawPair]):
    """The result of scanning a folder: a mapping ``pair_key -> RawPair``, plus what did not fit."""

    pairs: dict[str, RawPair]
    unmatched: tuple[str, ...] = ()
    """Files left out because of their name, each as ``"name (reason)"``."""
    duplicates: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """``"image_{N}_{channel}_{kind}" -> files`` claimed by several files; those pairs are left out."""

    def __getitem__(self, key: str) -> RawPair:
        return self.pairs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def complete(self) -> dict[str, RawPair]:
        """Pairs with both angle and fused, the ones training and evaluation can use."""
        return {key: pair for key, pair in self.pairs.items() if pair.is_complete}


#: Listings of ignored files already reported in this run (see :func:`forget_reported_files`).
_REPORTED_UNMATCHED: set[tuple[str, ...]] = set()


def forget_reported_files() -> None:
    """Start a new run: the next listing of ignored files is reported again."""
    _REPORTED_UNMATCHED.clear()


def pair_files(paths: Iterable[str | Path], root: str | Path | None = None) -> PairListing:
    """Pair angle and fused files by ``(N, channel)``.

    Files that do not match the naming pattern are listed in one warning and
    left out. A fused file without its angle, or an angle without its fused,
    is kept (an angle alone is enough for inference) and reported by name.
    Two files claiming the same ``(N, channel, kind)`` (the same name in two
    sub-folders, say) cannot be told apart: that pair is left out and both
    files are named in a warning and in :attr:`PairListing.duplicates`.
    """
    found: dict[tuple[int, str, str], list[str]] = {}
    unmatched: list[str] = []
    for raw_path in sorted(str(p) for p in paths):
        try:
            name = parse_filename(raw_path)
        except PairingError as exc:
            reason = str(exc).split(": ", 1)[-1]
            unmatched.append(f"{_relative(raw_path, root)} ({reason})")
            continue
        found.setdefault((name.image_id, name.channel, name.kind), []).append(raw_path)

    if unmatched and tuple(unmatched) not in _REPORTED_UNMATCHED:
        # several datasets list the same folder in one run: say it once
        _REPORTED_UNMATCHED.add(tuple(unmatched))
        logger.warning("%d file(s) ignored, not FuseMyCell volumes: %s", len(unmatched), ", ".join(unmatched))
    duplicates = {
        f"{pair_key(image_id, channel)}_{kind}": tuple(files)
        for (image_id, channel, kind), files in found.items()
        if len(files) > 1
    }
    for slot, files in duplicates.items():
        logger.warning(
            "duplicate id: %s are all %s; that pair is left out, keep one of them", " and ".join(files), slot
        )
    duplicated_pairs = {slot.rsplit("_", 1)[0] for slot in duplicates}

    pairs: dict[str, RawPair] = {}
    for image_id, channel in sorted({(i, c) for i, c, _ in found}):
        if pair_key(image_id, channel) in duplicated_pairs:
            continue
        angle = found.get((image_id, channel, "angle"), [None])[0]
        fused = found.get((image_id, channel, "fused"), [None])[0]
        pair = RawPair(image_id=image_id, channel=channel, angle=angle, fused=fused)
        if pair.angle is None:
            logger.warning("%s: fused volume without its angle (single view); unusable for training", pair.fused)
        elif pair.fused is None:
            logger.warning("%s: angle without its fused volume; usable for inference only", pair.angle)
        pairs[pair.key] = pair
    return PairListing(pairs=pairs, unmatched=tuple(unmatched), duplicates=duplicates)


def _relative(path: str, root: str | Path | None) -> str:
    if root is None:
        return path
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path
