"""Which heatmap methods a run uses, checked against the model and the installed extras before any work.

What each method needs (:func:`method_refusal`):

- ``fcn`` — nothing: every converted classifier scores its windows.
- ``cam`` — a classifier ending in global pooling (ResNet, ConvNeXt, EfficientNet, …): it scores one feature cell
  alone, which only a free window allows (:func:`fcn_app.models.graph.has_free_window`). VGG and AlexNet end in
  fully connected layers over a fixed 7×7 grid: they have no CAM.
- pytorch-grad-cam's methods — the optional extra ``fcn-heatmap[cam]``.

Plain Python, no torch: the command line refuses a combination that cannot work before it imports torch or loads a
model, reading whether the model ends in global pooling from the recorded catalog (:mod:`fcn_app.catalog`); the
library checks again against the loaded network (a ``module:callable`` or an unlisted timm model), still before
scoring anything.

``compare``'s defaults depend on the model (:func:`default_methods`): :data:`~fcn_app.choices.DEFAULT_METHODS`
less what the model or the installation cannot run, so ``fcn-heatmap compare photo.jpg`` works with the default
VGG16 (no ``cam``) and with ResNet-50 (with it). Score-CAM is not a default: it runs the network once per channel
of the target layer (512 passes for VGG16, 2048 for ResNet-50) — minutes on a CPU for one picture.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from .choices import DEFAULT_METHODS, INSTALL_HINT, check_method
from .errors import FcnError, MissingExtraError, OptionError
from .method_registry import get_method

__all__ = ["POOLED_EXAMPLES", "check_methods_usable", "default_methods", "method_refusal", "module_installed",
           "parse_methods"]

#: Classifiers ending in global pooling, named where ``cam`` is refused.
POOLED_EXAMPLES = ("resnet50", "convnext_tiny", "efficientnet_b0")


def parse_methods(methods: str | Sequence[str]) -> list[str]:
    """``"fcn,cam,gradcam"`` (or a list) → checked, de-duplicated method names in order."""
    names = [name for name in (methods.split(",") if isinstance(methods, str) else methods) if str(name).strip()]
    if not names:
        raise OptionError("methods", "name at least one method, e.g. fcn,gradcam")
    try:
        return list(dict.fromkeys(check_method(name) for name in names))
    except OptionError as error:
        raise OptionError("methods", str(error)) from None


def module_installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it (pytorch-grad-cam's import takes seconds and
    torch)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken entry in sys.modules
        return False


def method_refusal(method: str, *, model: str, pooled_head: bool | None, option: str = "methods"
                   ) -> FcnError | None:
    """Why ``method`` cannot run with ``model`` here (an error to raise, naming the fix), or ``None``.

    ``pooled_head`` says whether the model ends in global pooling; ``None`` (not known yet: a model the catalog
    does not hold) leaves that check to when the network is loaded.
    """
    method = get_method(method)
    if method.needs_pooled_head and pooled_head is False:
        return OptionError(option, f"{method.name} needs a classifier ending in global pooling "
                                   f"({', '.join(POOLED_EXAMPLES)}, …); {model} ends in fully connected layers: leave "
                                   f"{method.name} out or use a model such as {POOLED_EXAMPLES[0]}")
    if method.extra is not None and not module_installed(method.module):
        return MissingExtraError(f"{method.name} needs {method.package}, an optional extra: {method.install_hint}",
                                 option=option)
    return None


def check_methods_usable(methods: Sequence[str], *, model: str, pooled_head: bool | None,
                         option: str = "methods") -> list[str]:
    """``methods`` normalised, or the first :func:`method_refusal` raised: every method is checked before any of
    them runs, so a run that cannot finish stops before it starts."""
    names = [check_method(method) for method in methods]
    for method in names:
        refusal = method_refusal(method, model=model, pooled_head=pooled_head, option=option)
        if refusal is not None:
            raise refusal
    return names


def default_methods(*, model: str, pooled_head: bool) -> tuple[list[str], str | None]:
    """``compare``'s methods when none are named: :data:`~fcn_app.choices.DEFAULT_METHODS` less those ``model``
    or the installation cannot run, and a note naming what was left out for a missing extra (``None`` if
    nothing was). ``cam`` is left out silently for a model without a pooled head: it has no CAM to show."""
    usable, missing = [], []
    for method in DEFAULT_METHODS:
        refusal = method_refusal(method, model=model, pooled_head=pooled_head)
        if refusal is None:
            usable.append(method)
        elif isinstance(refusal, MissingExtraError):
            missing.append(method)
    note = (f"{', '.join(missing)} left out: {'it needs' if len(missing) == 1 else 'they need'} pytorch-grad-cam, "
            f"an optional extra: {INSTALL_HINT}") if missing else None
    return usable, note
