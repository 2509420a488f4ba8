"""GeoRSCLIP's `rs5m_test_data`, as it publishes it: one zip in its Hub repo, unpacked once.

The zip comes through the Hub cache (`hub.resolve`, so `HF_HUB_OFFLINE`, revisions and the download
progress bar behave as everywhere else); it is unpacked under `$GEORSCLIP_CACHE/rs5m_test_data/<blob>/`,
named by the zip's content hash so that a new upload unpacks anew. Unpacking goes to a temporary folder
renamed into place when complete, so an interrupted run leaves nothing that looks finished.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

from tqdm import tqdm

from georsclip_jax import hub
from georsclip_jax.storage import cache_root

FOLDER = "rs5m_test_data"


def unpacked_root(into: Path) -> Path:
    """The `rs5m_test_data` tree inside an unpacked zip: its top folder of that name, else the root."""
    inner = into / FOLDER
    return inner if inner.is_dir() else into


def unpack(zip_path: Path, into: Path) -> Path:
    """Unpack `zip_path` into `into` (once) and return the test-data root inside it. zipfile drops
    absolute paths and `..` from member names, so nothing is written outside `into`."""
    if into.is_dir():
        return unpacked_root(into)
    partial = into.with_name(f"{into.name}.partial{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            with tqdm(total=sum(m.file_size for m in members), unit="B", unit_scale=True,
                      desc=f"unpacking {zip_path.name}") as bar:
                for member in members:
                    archive.extract(member, partial)
                    bar.update(member.file_size)
    except (zipfile.BadZipFile, EOFError) as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise ValueError(f"{zip_path}: not a readable zip ({e}); delete it and download it again") from None
    partial.replace(into)
    return unpacked_root(into)


def fetch(hub_id: str) -> Path:
    """The local `rs5m_test_data` root for a Hub id of GeoRSCLIP's zip, downloading and unpacking once."""
    zip_path = hub.resolve(hub_id)
    blob = Path(os.path.realpath(zip_path)).name  # the Hub cache names blobs by their content hash
    return unpack(zip_path, Path(cache_root()) / FOLDER / blob)
