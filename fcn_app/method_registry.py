"""The heatmap methods (``--method``) and what each one is, needs and refuses: one registry the rest reads.

Each :class:`Method` carries its traits — whether its map is a saliency map, whether it needs a classifier ending in
global pooling, which optional extra it needs, which pytorch-grad-cam class makes it — so code asks the method
(``get_method(name).saliency``) instead of comparing names. Adding one of pytorch-grad-cam's methods is one line
of :data:`METHODS`.

Plain Python, no torch: the command line lists and checks methods before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .errors import OptionError

__all__ = ["METHODS", "Method", "MethodKind", "get_method", "install_line"]


class MethodKind(str, Enum):
    """What a method's map is."""

    SCORE_MAP = "score map"  # the classifier's probability on every window
    CAM = "cam"  # class activation mapping: per-cell logits, scaled per map to [0, 1]
    SALIENCY = "saliency"  # pytorch-grad-cam's map of a layer, scaled per map to [0, 1]


def install_line(extra: str) -> str:
    """The pip command that installs this project's optional ``extra``."""
    return f"pip install 'fcn-heatmap[{extra}]'"


@dataclass(frozen=True)
class Method:
    """One ``--method`` and its traits."""

    name: str
    kind: MethodKind
    #: A pytorch-grad-cam map: one per class at one scale, read from a layer (``target_layer``).
    saliency: bool = False
    #: Scaled per map to [0, 1]: it says *where*, not *how sure*, so the classifier's probability goes beside it.
    min_max_scaled: bool = False
    #: Needs a classifier ending in global pooling (a free window: one feature cell scored alone).
    needs_pooled_head: bool = False
    #: The window (in feature cells) the method scores with whatever ``--window`` says; ``None``: the model's own.
    window: int | None = None
    #: Hooks and differentiates the torch network: runs on torch whatever ``--backend`` says.
    runs_on_torch_only: bool = False
    #: The optional extra it needs (``pip install 'fcn-heatmap[EXTRA]'``), the package that extra installs, and
    #: the module that package provides.
    extra: str | None = None
    package: str | None = None
    module: str | None = None
    #: The class of :attr:`module` that makes the map (``pytorch_grad_cam.GradCAM``).
    class_name: str | None = None
    #: Score-map options the heatmap command refuses with this method → the reason, as the error says it.
    refuses: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def install_hint(self) -> str | None:
        """How to install what the method needs (``None``: nothing to install)."""
        return install_line(self.extra) if self.extra else None


def _grad_cam(name: str, class_name: str) -> Method:
    """A pytorch-grad-cam method: ``pytorch_grad_cam.<class_name>`` on the converted network."""
    one_scale = f"applies to score maps; the {name} method makes one saliency map per class at one scale"
    return Method(name, MethodKind.SALIENCY, saliency=True, min_max_scaled=True, runs_on_torch_only=True,
                  extra="cam", package="pytorch-grad-cam", module="pytorch_grad_cam", class_name=class_name,
                  refuses={"save_scores": one_scale, "scales": one_scale})


#: Every ``--method``, in the order ``--help`` lists them.
METHODS: dict[str, Method] = {method.name: method for method in (
    Method("fcn", MethodKind.SCORE_MAP),
    Method("cam", MethodKind.CAM, min_max_scaled=True, needs_pooled_head=True, window=1,
           refuses={"scales": "cam scales each class's map to [0, 1] on its own, so there are no probabilities to "
                              "fuse across scales (--window 1 gives per-cell probabilities)"}),
    _grad_cam("gradcam", "GradCAM"),
    _grad_cam("gradcam++", "GradCAMPlusPlus"),
    _grad_cam("xgradcam", "XGradCAM"),
    _grad_cam("layercam", "LayerCAM"),
    _grad_cam("hirescam", "HiResCAM"),
    _grad_cam("eigencam", "EigenCAM"),
    _grad_cam("eigengradcam", "EigenGradCAM"),
    _grad_cam("scorecam", "ScoreCAM"),
    _grad_cam("ablationcam", "AblationCAM"),
)}


def get_method(method: str) -> Method:
    """The :class:`Method` named ``method`` (case, ``-``/``_`` and ``plusplus`` for ``++`` ignored:
    ``"GradCAM++"`` → ``gradcam++``), or :class:`~fcn_app.errors.OptionError` listing the methods."""
    name = str(method).strip().lower().replace("_", "").replace("-", "").replace("plusplus", "++")
    if name not in METHODS:
        raise OptionError("method", f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]
