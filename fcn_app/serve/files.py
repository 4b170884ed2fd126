"""Where the server may read and write: images below ``--root`` only, uploads only in a private folder.

A path from a request is never trusted: it must be relative, have no ``..`` part, resolve (symlinks followed)
to a regular image file inside the root, and only image files and folders inside the root are listed — a
symlink that points outside the root is neither listed nor served.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import InputImageError
from ..io import is_image_path

__all__ = ["ImageRoot", "PrivateFolder", "RootPathError"]


class RootPathError(InputImageError):
    """A path below the root that may not be read: outside the root, not an image, or missing."""


@dataclass(frozen=True)
class ImageRoot:
    """A folder whose images the server may read (``--root``)."""

    folder: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder).resolve(strict=True))

    def _inside(self, resolved: Path) -> bool:
        """Whether a resolved path is the root or below it, compared by path parts: ``root-x`` is not inside ``root``
        (a string-prefix test would say it is)."""
        return resolved.is_relative_to(self.folder)

    def _resolve(self, relative: str) -> Path:
        text = (relative or "").replace("\\", "/")
        parts = PurePosixPath(text).parts
        if text.startswith("/") or any(part == ".." for part in parts) or "\x00" in text:
            raise RootPathError(f"{relative!r}: give a path relative to the root, without '..'")
        try:
            resolved = (self.folder / Path(*parts) if parts else self.folder).resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            raise RootPathError(f"{relative!r}: no such file or folder below the root") from None
        except (OSError, RuntimeError):  # a symlink loop, a name too long
            raise RootPathError(f"{relative!r}: cannot be read below the root") from None
        if not self._inside(resolved):
            raise RootPathError(f"{relative!r}: points outside the root")
        return resolved

    def image(self, relative: str) -> Path:
        """The image file ``relative`` names, checked as the module says."""
        path = self._resolve(relative)
        if not path.is_file() or not is_image_path(path):
            raise RootPathError(f"{relative!r}: not an image file (jpg, png, bmp, webp, tif, gif)")
        return path

    def listing(self, relative: str = "") -> dict:
        """Sub-folders and image files of folder ``relative`` (names only; escaping symlinks left out)."""
        folder = self._resolve(relative)
        if not folder.is_dir():
            raise RootPathError(f"{relative!r}: not a folder below the root")
        folders, images = [], []
        for entry in sorted(os.scandir(folder), key=lambda item: item.name.lower()):
            try:
                target = Path(entry.path).resolve(strict=True)
            except (OSError, RuntimeError):
                continue
            if not self._inside(target) or entry.name.startswith("."):
                continue
            if target.is_dir():
                folders.append(entry.name)
            elif target.is_file() and is_image_path(entry.name):
                images.append(entry.name)
        base = folder.relative_to(self.folder).as_posix()
        return {"folder": "" if base == "." else base, "folders": folders, "images": images}


class PrivateFolder:
    """A folder only this user can enter (0700), holding one sub-folder per request, removed with it — by
    :meth:`close` (the server's shutdown), or else when the object is collected or the process exits (an app
    that was created but never served, a server stopped before its shutdown ran)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="fcn-heatmap-serve-"))  # mkdtemp: mode 0700
        self._remover = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)

    def request_folder(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.path, prefix="request-"))

    @staticmethod
    def remove(folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        self._remover()
