"""Cached, checksummed, atomic downloads (a thin layer over pooch's downloaders).

* The cache folder is ``$HYBRIDLAB_CACHE`` when set, else ``~/.cache/hybridlab``.
* A file is downloaded to a temporary ``.part`` file next to its final place, its SHA-256 is
  checked, and only then is it moved into place with :func:`os.replace`. An interrupted or failed
  download therefore never leaves a file (partial or bad) under the final name, and the
  temporary file is removed too.
* No network (or any other failure to download) raises :class:`DataUnavailable`, whose message
  says where to put the file by hand. Callers that have an embedded default catch it, warn, and
  fall back.
* A downloaded file whose hash is wrong raises :class:`ChecksumError` naming the file and both
  hashes; the bad file is deleted.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

CACHE_ENV = "HYBRIDLAB_CACHE"

#: ``downloader(url, output_path)`` writes the resource at ``url`` to ``output_path``.
Downloader = Callable[[str, str], object]


class DataUnavailable(RuntimeError):
    """A dataset file is neither present locally nor downloadable (e.g. the machine is offline)."""


class ChecksumError(ValueError):
    """A downloaded file does not have the expected SHA-256 (the file has been removed)."""


def cache_dir(create: bool = True) -> Path:
    """The cache folder: ``$HYBRIDLAB_CACHE`` if set, else ``~/.cache/hybridlab``."""
    env = os.environ.get(CACHE_ENV)
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "hybridlab"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pooch_downloader(progressbar: bool = False) -> Downloader:
    """The default downloader: pooch's HTTP/FTP/SFTP downloader chosen from the URL."""

    def download(url: str, output_path: str) -> None:
        from pooch.downloaders import choose_downloader

        choose_downloader(url, progressbar=progressbar)(url, output_path, None)

    return download


def fetch(
    urls: str | Sequence[str],
    *,
    sha256: str,
    fname: str,
    subdir: str = "",
    cache: str | os.PathLike[str] | None = None,
    downloader: Downloader | None = None,
) -> Path:
    """Return the path of a cached, verified copy of a file, downloading it if needed.

    Args:
        urls: one URL or several mirrors, tried in order.
        sha256: the expected hex SHA-256 of the file (required: downloads are always checked).
        fname: the file name in the cache.
        subdir: a folder inside the cache, e.g. ``"mnist"``.
        cache: the cache folder (default :func:`cache_dir`).
        downloader: ``downloader(url, path)``; default :func:`pooch_downloader`.

    Raises:
        DataUnavailable: no mirror could be downloaded (offline, HTTP error, ...).
        ChecksumError: a mirror delivered a file with the wrong hash (and no mirror a good one).
    """
    mirrors = [urls] if isinstance(urls, str) else list(urls)
    if not mirrors:
        raise ValueError(f"fetch({fname!r}): no URL given")
    expected = sha256.lower()
    folder = (Path(cache) if cache is not None else cache_dir()) / subdir
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / fname

    if target.exists():
        found = file_sha256(target)
        if found == expected:
            return target
        warnings.warn(
            f"cached {target} has SHA-256 {found}, expected {expected}; downloading it again",
            stacklevel=2,
        )
        target.unlink()

    download = downloader or pooch_downloader()
    failures: list[str] = []
    bad_hash: ChecksumError | None = None
    for url in mirrors:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{fname}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            download(url, tmp_name)
            found = file_sha256(tmp)
            if found != expected:
                bad_hash = ChecksumError(
                    f"{fname} downloaded from {url} has SHA-256 {found}, expected {expected}; "
                    f"the file was removed. The mirror may be corrupt: download {fname} by hand "
                    f"into {folder}, or pass a data folder that holds a good copy."
                )
                failures.append(f"{url}: wrong SHA-256 {found}")
                continue
            os.replace(tmp, target)
            return target
        except Exception as err:  # network errors come in many types (requests, ftplib, OSError)
            failures.append(f"{url}: {type(err).__name__}: {err}")
        finally:
            tmp.unlink(missing_ok=True)  # a failed, bad or interrupted download leaves nothing
    if bad_hash is not None:
        raise bad_hash
    raise DataUnavailable(
        f"could not download {fname} (this machine may be offline).\n  "
        + "\n  ".join(failures)
        + f"\nTo use it anyway, download {mirrors[0]} by hand and save it as {target} "
        f"(SHA-256 {expected}), or put the data in a folder and pass data_dir=... "
        f"(command line: --data-dir)."
    )
