"""Class names: choosing classes by name, word or index, and the names a network will have before it is loaded.

Plain Python (no torch), so a mistyped ``--class`` is refused before the network loads, in the same words as
after (:func:`resolve_classes` is the one rule for both).
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .choices import TIMM_PREFIX, TINY_ARCH
from .errors import ClassSelectionError, WeightsError

__all__ = ["ClassSelection", "categories_before_loading", "imagenet_categories", "read_class_names",
           "resolve_classes"]


@dataclass(frozen=True)
class ClassSelection:
    """One heatmap's class: a single class, or several whose probabilities are summed (``--class cat``)."""

    name: str
    indices: tuple[int, ...]


def _resolve_one(spec: str, categories: Sequence[str]) -> ClassSelection:
    text = spec.strip()
    if re.fullmatch(r"\d+", text):
        index = int(text)
        if index >= len(categories):
            raise ClassSelectionError(f"class index {index} is out of range; the model has {len(categories)} classes (0–{len(categories) - 1})")
        return ClassSelection(categories[index], (index,))
    lowered = [name.lower() for name in categories]
    needle = text.lower()
    if not needle:
        raise ClassSelectionError("empty class name; give a class name or index")
    if needle in lowered:
        index = lowered.index(needle)
        return ClassSelection(categories[index], (index,))
    word = re.compile(rf"(?<![a-z0-9]){re.escape(needle)}(?![a-z0-9])")
    matches = [index for index, name in enumerate(lowered) if word.search(name)]
    if not matches:
        matches = [index for index, name in enumerate(lowered) if needle in name]
    if matches:
        return ClassSelection(text, tuple(matches))
    close = difflib.get_close_matches(needle, lowered, n=5, cutoff=0.6)
    hint = f"; did you mean: {', '.join(repr(categories[lowered.index(name)]) for name in close)}?" if close else ""
    raise ClassSelectionError(f"no class named {spec!r}{hint} (class names match case-insensitively; indices work too)")


def resolve_classes(specs: Sequence[str], categories: Sequence[str]) -> list[ClassSelection]:
    """Turn ``--class`` values into selections.

    Each value is an index, an exact name (case-insensitive), or a word/substring matching several names whose
    probabilities are then summed per pixel (``"cat"`` → every class whose name contains the word *cat*).
    """
    return [_resolve_one(spec, categories) for spec in specs]


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one per line (blank lines and surrounding spaces ignored)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise WeightsError(f"{path}: cannot read class names ({getattr(error, 'strerror', None) or error})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise WeightsError(f"{path}: no class names in it (expected one name per line)")
    return names


@functools.lru_cache(maxsize=1)
def imagenet_categories() -> list[str] | None:
    """torchvision's 1000 ImageNet class names, read from its ``models/_meta.py`` without importing torchvision
    (the file is one list literal); ``None`` if the file is not where it was, and the caller asks torchvision."""
    spec = importlib.util.find_spec("torchvision")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "_meta.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "_IMAGENET_CATEGORIES"
                                                for target in node.targets):
            names = ast.literal_eval(node.value)
            return list(names) if len(names) == 1000 else None
    return None


def categories_before_loading(model: str, classes_path: str | os.PathLike | None = None,
                              checkpoint: str | os.PathLike | None = None) -> list[str] | None:
    """The class names the network of these options will have, where they are known without loading it; else
    ``None``.

    A torchvision or timm classifier names its outputs from ``classes_path`` when given, else ImageNet's 1000
    (weights with another number of outputs need the file: :func:`fcn_app.models.zoo.class_names_for`). A
    checkpoint, ``module:callable`` or the untrained ``tiny_vgg`` carry their own names: known once loaded.
    """
    if checkpoint is not None or model == TINY_ARCH or (":" in model and not model.startswith(TIMM_PREFIX)):
        return None
    if classes_path is not None:
        return read_class_names(classes_path)
    return imagenet_categories()
