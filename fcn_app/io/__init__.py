"""Input and output: decoding images (first stage) and writing results atomically (last stage)."""

from .atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_npz,
    atomic_write_png,
    atomic_write_stream,
    atomic_write_text,
    encode_png,
    ensure_output_dir,
    remove_stale_temporaries,
)
from .images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, is_image_path, load_image, to_rgb_array

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_npz",
    "atomic_write_png",
    "atomic_write_stream",
    "atomic_write_text",
    "encode_png",
    "ensure_output_dir",
    "is_image_path",
    "load_image",
    "remove_stale_temporaries",
    "to_rgb_array",
]
