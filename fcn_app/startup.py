"""What the ``fcn-heatmap`` process does first, before ``import torch``.

``import torch`` takes about a second and keeps one core busy; on a 2-core machine the other one is idle. The
command line uses that second to decode the photo it was given (:func:`warm_start`), and sets the process's
allocator to keep the memory it frees (:func:`keep_freed_memory`). Nothing here imports torch; library functions
never call these — they change the whole process, which is the command line's to decide.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from .choices import IMAGE_EXTENSIONS, usable_cpus

__all__ = ["HEAP_BYTES_PER_PIXEL", "WARM_DECODE_MAX_PIXELS", "keep_freed_memory", "warm_start"]

#: glibc's ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
#: Photos up to this many pixels are decoded during start-up; a bigger one is left to its command (which may be
#: told to decode it smaller, ``--max-side``).
WARM_DECODE_MAX_PIXELS = 50_000_000
#: Heap mapped in during start-up, per pixel of the photo: a 12 MP photo's default run (VGG16 fp32 at 896×672,
#: heat and overlay on 12 MP) peaked at 687 MB of heap (glibc's ``mallinfo2`` at exit), of which 48 bytes/pixel
#: (585 MB) is prepared early.
HEAP_BYTES_PER_PIXEL = 48


@functools.lru_cache(maxsize=1)
def keep_freed_memory(largest: int = 1 << 30) -> bool:
    """Let this process reuse the memory it frees instead of handing it back to the kernel and faulting it in anew.

    glibc's ``malloc`` serves every block over 32 MB with a fresh ``mmap`` and unmaps it on ``free``: each of
    VGG16's big activations (154 MB for a first-block convolution of an 896×672 image: ~40,000 pages) then costs
    the kernel a page fault per 4 kB touched, on every image. Raising the ``mmap`` threshold to ``largest`` bytes
    and never trimming the heap makes such blocks come from the heap and go back to it, so the next layer and the
    next image reuse pages already mapped; the process keeps its peak memory, as torch's GPU caching allocator
    does. One arena: blocks freed by any thread are there for the others. Returns whether the C library took the
    settings (``False`` off glibc: macOS, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library symbols to see, or no mallopt among them
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    largest = min(largest, 2**31 - 1)
    return (mallopt(_M_MMAP_THRESHOLD, largest) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
            and mallopt(_M_ARENA_MAX, 1) == 1)


def _map_heap(size: int) -> None:
    """Grow the heap by ``size`` bytes and touch every page, then free the block: with :func:`keep_freed_memory`
    it stays mapped, so the allocations that reuse it take no page faults. ctypes calls run without the GIL."""
    libc = ctypes.CDLL(None)
    libc.malloc.argtypes, libc.malloc.restype = (ctypes.c_size_t,), ctypes.c_void_p
    libc.memset.argtypes, libc.memset.restype = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t), ctypes.c_void_p
    libc.free.argtypes, libc.free.restype = (ctypes.c_void_p,), None
    block = libc.malloc(size)
    if block:
        libc.memset(block, 0, size)
        libc.free(block)


def _single_photo(argv: Sequence[str]) -> Path | None:
    """The one existing image file among the command's arguments, if there is exactly one; else ``None`` (a
    folder, a list or several files are decoded by their own workers)."""
    photos = [Path(argument) for argument in argv
              if not argument.startswith("-") and Path(argument).suffix.lower() in IMAGE_EXTENSIONS]
    photos = [photo for photo in photos if photo.is_file()]
    return photos[0] if len(photos) == 1 else None


def _pixels(path: Path) -> int | None:
    """The pixel count ``path``'s header declares (Pillow reads no pixel data for it); ``None`` if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.width * image.height
    except Exception:  # anything unreadable is the command's to report, in its own words
        return None


def _available_memory() -> int:
    """Bytes of memory available now (``sysconf``), or 0 where it cannot be told."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0


def _idle_cores() -> int:
    """CPUs this process may use, less the one ``import torch`` keeps busy."""
    return usable_cpus() - 1


def warm_start(argv: Sequence[str]) -> bool:
    """Start-up of the command line, given its arguments. :func:`keep_freed_memory`; and when the arguments name
    one photo (``fcn-heatmap photo.jpg``, ``detect photo.jpg``…) of at most :data:`WARM_DECODE_MAX_PIXELS` and a
    core is left idle by ``import torch``, two background threads use it while the caller imports torch:

    * the photo's full-size decode begins (:func:`~fcn_app.io.start_decoding`) — what a working-size run draws its
      overlay on and a native-size run feeds the network. The command takes that result when it decodes the same
      file with the same arguments; with others (``--max-side``, ``--max-pixels``) it decodes as it would have;
    * :data:`HEAP_BYTES_PER_PIXEL` bytes per pixel of heap (at most a quarter of the free memory) are mapped in,
      for the network's activations and the full-size heat and overlay to reuse instead of faulting pages in on
      the busy cores (with glibc, whose freed blocks then stay mapped: :func:`keep_freed_memory`).

    Returns whether they began. Outputs are the same either way (``tests/test_startup.py``).
    """
    kept = keep_freed_memory()
    photo = _single_photo(argv)
    if photo is None or _idle_cores() < 1:
        return False
    pixels = _pixels(photo)
    if pixels is None or pixels > WARM_DECODE_MAX_PIXELS:
        return False
    if kept:  # off glibc a freed block would not stay mapped: nothing to prepare
        heap = min(HEAP_BYTES_PER_PIXEL * pixels, _available_memory() // 4)
        threading.Thread(target=_map_heap, args=(heap,), name="map heap", daemon=True).start()
    from .io import start_decoding  # numpy and Pillow: not for a run that names no photo (``--help``)

    return start_decoding(photo, None, enlarge=False)
