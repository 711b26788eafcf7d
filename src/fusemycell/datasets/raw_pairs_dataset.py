"""``FuseMyCellPairsDataset``: a folder of ``image_{N}_{channel}_{angle|fused}.tif`` files.

Loading scans the folder (recursively) and pairs angle with fused by
``(N, channel)`` without reading any voxels; a node opens the volumes it needs
with :meth:`PairSources.sources` (lazy loaders, as a folder dataset's). Saving writes volumes under
their FuseMyCell names; it is how the simulation pipeline fills a raw folder.

Real data is never overwritten: a folder a pipeline writes into carries a
marker file, and saving into a folder that holds TIFF files but no marker is
refused.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from fusemycell.datasets.folder_writer import LockedFolderWriter
from fusemycell.datasets.previews import TablePreview
from fusemycell.datasets.volume_sources import VolumeSource, VolumeSourceError
from fusemycell.io.atomic import remove_leftovers
from fusemycell.io.formats import read_info
from fusemycell.io.pairs import PairingError, PairListing, pair_files, parse_filename
from fusemycell.io.tiff import save_volume
from fusemycell.io.volume import Volume, VolumeFormatError
from fusemycell.progress import track

#: Marker file naming a folder as written by a fusemycell pipeline (its .tif files may be replaced).
GENERATED_MARKER = ".fusemycell-generated"

SaveValue = Volume | tuple[Volume, Volume] | Callable[[], Any]


def _write_one(target: Path, volume: Volume) -> Path:
    """Write one volume (in a worker process when saving in parallel)."""
    return save_volume(target, volume)


def _tiff_files(folder: Path) -> list[Path]:
    tiffs = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".tif", ".tiff")]
    # OME-Zarr images are folders (NAME.ome.zarr); no TIFF is looked for inside one
    images = [p for p in folder.rglob("*.zarr") if p.is_dir() and not any(a.suffix == ".zarr" for a in p.parents)]
    return sorted(p for p in tiffs + images if not any(a.suffix == ".zarr" for a in p.parents))


@dataclass(frozen=True)
class PairSources(PairListing):
    """What :class:`FuseMyCellPairsDataset` loads: the :class:`~fusemycell.io.pairs.PairListing` of the folder,
    whose volumes a node opens through :meth:`sources` (never by path)."""

    def sources(self, key: str) -> tuple[VolumeSource | None, VolumeSource | None]:
        """Lazy loaders of the pair's angle and fused volumes (None for a file the pair lacks)."""
        pair = self[key]
        return tuple(VolumeSource(path) if path else None for path in (pair.angle, pair.fused))  # type: ignore[return-value]


class FuseMyCellPairsDataset(LockedFolderWriter, AbstractDataset[Mapping[str, SaveValue], PairSources]):
    """A local folder of FuseMyCell angle/fused volumes.

    ``load`` returns a :class:`PairSources` (a :class:`~fusemycell.io.pairs.PairListing`), a mapping
    ``{pair_key: RawPair}`` (``pair_key`` like ``image_3_nucleus``) that also
    lists the files left out (bad names, duplicate ids); it warns about those
    and about angles or fused volumes without their partner.

    ``save`` takes a mapping whose keys are file stems
    (``image_3_nucleus_angle``) with a :class:`~fusemycell.io.volume.Volume`, or
    pair keys (``image_3_nucleus``) with an ``(angle, fused)`` tuple. A value may
    be a callable returning either, so volumes are produced and written one at a
    time. Each file is written atomically. When the mapping has a ``workers``
    attribute above 1 (see :class:`ParallelVolumes`), volumes are written by that
    many processes; a lazily computed volume is then streamed plane by plane in
    its worker, so memory stays bounded per worker.

    Example catalog entry::

        raw_pairs:
          type: fusemycell.datasets.FuseMyCellPairsDataset
          path: data/01_raw/synthetic
    """

    def __init__(
        self, *, path: str | os.PathLike, created_by: str | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        """Create a dataset over the folder ``path`` (created on first save).

        Args:
            path: Local folder holding (or receiving) the ``.tif`` files.
            created_by: The pipeline that writes this folder, named when it is missing
                (``None``: the raw folder, written by ``simulation`` or brought by the user).
            metadata: Free metadata for plugins such as kedro-viz (layer, ...).
        """
        self._path = Path(path)
        self._created_by = created_by
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def load(self) -> PairSources:
        """Pair the folder's files; raises ``DatasetError`` if the folder is missing or holds no such file."""
        if not self._path.is_dir():
            if self._created_by:
                raise VolumeSourceError(
                    f"{self._path}: data folder not found; run 'kedro run --pipelines {self._created_by}' "
                    "first (with the same --env, and --params raw_dir=... if you use your own data)"
                )
            raise VolumeSourceError(
                f"{self._path}: data folder not found. For synthetic data run 'kedro run --pipelines simulation'; "
                "for your FuseMyCell folder pass it to every run that reads raw data, e.g. 'kedro run "
                "--pipelines preprocessing,patching,training,evaluation --params raw_dir=PATH'"
            )
        listing = pair_files(_tiff_files(self._path), root=self._path)
        if not listing.pairs and not listing.duplicates:
            raise VolumeSourceError(
                f"{self._path}: no image_{{N}}_{{nucleus|membrane}}_{{angle|fused}}.tif files found"
                + (f"; ignored: {', '.join(listing.unmatched)}" if listing.unmatched else "")
            )
        return PairSources(pairs=listing.pairs, unmatched=listing.unmatched, duplicates=listing.duplicates)

    def save(self, data: Mapping[str, SaveValue]) -> None:
        """Write each volume under its FuseMyCell name, refusing to touch a folder of real data."""
        self._guard_real_data()
        self._path.mkdir(parents=True, exist_ok=True)
        with self._writing():
            self._save_locked(data)

    def _save_locked(self, data: Mapping[str, SaveValue]) -> None:
        remove_leftovers(self._path)  # temporary files of a previous, killed run
        (self._path / GENERATED_MARKER).write_text(
            "Written by a fusemycell pipeline; its .tif files are replaced on the next run.\n"
        )
        workers = int(getattr(data, "workers", 1) or 1)
        written: set[Path] = set()
        description = f"writing {self._path}"
        try:
            if workers > 1 and len(data) > 1:
                with ProcessPoolExecutor(max_workers=min(workers, len(data))) as pool:
                    jobs = [
                        pool.submit(_write_one, self._path / f"{stem}.tif", volume)
                        for key, value in data.items()
                        for stem, volume in self._expand(key, value)
                    ]
                    for job in track(as_completed(jobs), description, total=len(jobs), unit="file"):
                        written.add(job.result())
            else:
                for key, value in track(data.items(), description, total=len(data), unit="item"):
                    for stem, volume in self._expand(key, value):
                        written.add(_write_one(self._path / f"{stem}.tif", volume))
        except (VolumeFormatError, OSError) as exc:
            raise DatasetError(str(exc)) from exc
        # a generated folder holds exactly what was last produced: stale volumes would be paired too
        for stale in set(_tiff_files(self._path)) - written:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()  # an OME-Zarr image is a folder

    def _expand(self, key: str, value: SaveValue) -> list[tuple[str, Volume]]:
        if callable(value):
            value = value()
        try:
            if isinstance(value, Volume):
                name = parse_filename(f"{key}.tif")
                return [(name.filename(suffix=""), value)]
            if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, Volume) for v in value):
                parse_filename(f"{key}_angle.tif")
                return [(f"{key}_angle", value[0]), (f"{key}_fused", value[1])]
        except PairingError as exc:
            raise DatasetError(f"{self._path}: cannot save {key!r}: {exc}") from exc
        raise DatasetError(
            f"{self._path}: cannot save {key!r}: expected a Volume for a file stem "
            f"or an (angle, fused) tuple for a pair key, got {type(value).__name__}"
        )

    def _guard_real_data(self) -> None:
        if not self._path.exists() or (self._path / GENERATED_MARKER).exists():
            return
        existing = _tiff_files(self._path)
        if existing:
            raise VolumeSourceError(
                f"{self._path}: refusing to write into a folder that holds {len(existing)} TIFF file(s) "
                f"not written by a fusemycell pipeline (e.g. {existing[0].name}); real data is never "
                "overwritten. Point this output at its own folder; with your own data leave out the "
                "simulation pipeline: 'kedro run --pipelines preprocessing,patching,training,evaluation "
                "--params raw_dir=PATH'"
            )

    def _exists(self) -> bool:
        return self._path.is_dir() and (
            any(self._path.rglob("image_*_*_*.tif*")) or any(self._path.rglob("image_*_*_*.ome.zarr"))
        )

    def preview(self) -> TablePreview:
        """kedro-viz preview: one row per pair with shapes and voxel sizes (headers only, no voxels)."""
        rows = []
        for key, pair in self.load().pairs.items():
            row: dict[str, Any] = {"pair": key, "channel": pair.channel}
            for kind in ("angle", "fused"):
                path = getattr(pair, kind)
                if path is None:
                    row[f"{kind} shape"] = "missing"
                    continue
                try:
                    info = read_info(path)
                    row[f"{kind} shape"] = "x".join(map(str, info.shape))
                    row["spacing zyx (um)"] = ", ".join(f"{s:g}" for s in info.spacing_zyx)
                    row["study"] = info.metadata.get("study", "")
                except VolumeFormatError as exc:
                    row[f"{kind} shape"] = f"unreadable: {exc}"
            rows.append(row)
        columns = ["pair", "channel", "study", "angle shape", "fused shape", "spacing zyx (um)"]
        return TablePreview(
            {
                "index": list(range(len(rows))),
                "columns": columns,
                "data": [[row.get(c, "") for c in columns] for row in rows],
            }
        )


class ParallelVolumes(dict):
    """A ``{name: volume}`` mapping for :class:`FuseMyCellPairsDataset` that is saved by ``workers`` processes.

    Values must be picklable (volumes with NumPy or lazily computed data, or
    ``functools.partial`` of module-level functions).
    """

    def __init__(self, *args: Any, workers: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workers = workers
