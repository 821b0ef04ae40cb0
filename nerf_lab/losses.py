"""Loss terms: small callables ``term(output, targets) -> () tensor``, named in the config.

The ``loss`` config group is a dict of named terms (``loss.terms.<name>``); each term is
instantiated from its node, called on every training step with the render output
(:class:`~nerf_lab.raymarchers.RenderOutput`, all passes) and the targets at the rays
(``{"rgb": (n_rays, 3), "silhouette": (n_rays, 1) or None}``), and logged as
``train/loss/<name>``. A term returns its value already multiplied by its weight. Any
callable with that signature works as a term (a plain function, a ``functools.partial``
or a module of the user's own).

Elementwise penalties (:func:`huber`, :func:`mse`, :func:`l1`) are pure functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from nerf_lab.raymarchers import RenderOutput
from nerf_lab.validate import check_bool, check_choice, check_number

Targets = Mapping[str, torch.Tensor | None]
LossTerm = Callable[[RenderOutput, Targets], torch.Tensor]


def huber(x: torch.Tensor, y: torch.Tensor, scaling: float = 0.1) -> torch.Tensor:
    """The tutorial's pseudo-Huber loss, elementwise.

    ``scaling * (sqrt(1 + (x - y)^2 / scaling^2) - 1)`` (the square root's argument is
    clamped at 1e-4, as in the tutorial).

    Args:
        x, y: tensors of the same shape ``(...)``.

    Returns:
        ``(...)`` elementwise losses.
    """
    diff_sq = (x - y) ** 2
    return ((1 + diff_sq / (scaling**2)).clamp(1e-4).sqrt() - 1) * float(scaling)


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Elementwise squared error ``(x - y)^2`` of two ``(...)`` tensors."""
    return (x - y) ** 2


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Elementwise absolute error ``|x - y|`` of two ``(...)`` tensors."""
    return (x - y).abs()


#: The elementwise penalties a term can use, by name.
PENALTIES = ("huber", "mse", "l1")
PASSES = ("all", "last")


class PenaltyTerm(torch.nn.Module):
    """A weighted elementwise penalty between a rendered quantity and its target.

    Args:
        kind: ``"huber"`` (the tutorial's pseudo-Huber), ``"mse"`` or ``"l1"``.
        weight: the term's weight (``>= 0``).
        scaling: the pseudo-Huber scale (``kind="huber"`` only; 0.1 in the tutorial).
        passes: ``"all"``: the sum over the passes of a multi-pass render (coarse and fine,
            as PyTorch3D's ``projects/nerf``); ``"last"``: the final pass only.

    The value is ``weight * mean(|penalty(rendered, target)|)`` over rays and channels
    (the tutorial's reduction), summed over the chosen passes.
    """

    #: The target the term compares with (a key of the targets dict).
    target_key = ""

    def __init__(
        self, kind: str = "huber", weight: float = 1.0, scaling: float = 0.1, passes: str = "all"
    ) -> None:
        super().__init__()
        self.kind = check_choice("kind", kind, PENALTIES)
        self.passes = check_choice("passes", passes, PASSES)
        self.scaling = check_number("scaling", scaling, 0, low_open=True)
        self.weight = check_number("weight", weight, 0)

    def penalty(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The elementwise penalty ``(...)`` of two ``(...)`` tensors."""
        if self.kind == "huber":
            return huber(x, y, self.scaling)
        return mse(x, y) if self.kind == "mse" else l1(x, y)

    def rendered(self, output: RenderOutput) -> torch.Tensor:
        """The rendered quantity ``(n_rays, C)`` of one pass."""
        raise NotImplementedError

    def forward(self, output: RenderOutput, targets: Targets) -> torch.Tensor:
        """``()`` the weighted term.

        Args:
            output: the render output of ``n_rays`` rays.
            targets: ``{target_key: (n_rays, C)}``.
        """
        target = targets.get(self.target_key)
        if target is None:
            raise ValueError(
                f"The {type(self).__name__} term needs {self.target_key!r} targets, which "
                "this scene does not have (e.g. no silhouettes/masks): remove the term."
            )
        passes = output.all_passes if self.passes == "all" else [output]
        total = sum(self.penalty(self.rendered(p), target).abs().mean() for p in passes)
        return self.weight * total


class ColorLoss(PenaltyTerm):
    """Penalty between the rendered colour and the target colour (``targets["rgb"]``)."""

    target_key = "rgb"

    def rendered(self, output: RenderOutput) -> torch.Tensor:
        return output.rgb


class SilhouetteLoss(PenaltyTerm):
    """Penalty between the ray opacity and the target silhouette (``targets["silhouette"]``).

    Args:
        required: whether a scene without silhouettes (masks) is an error (``True``) or
            the term is left out for it (``False``, decided when the run is built).
        kind, weight, scaling, passes: see :class:`PenaltyTerm`.
    """

    target_key = "silhouette"

    def __init__(
        self,
        kind: str = "huber",
        weight: float = 1.0,
        scaling: float = 0.1,
        passes: str = "all",
        required: bool = True,
    ) -> None:
        super().__init__(kind, weight, scaling, passes)
        self.required = check_bool("required", required)

    def rendered(self, output: RenderOutput) -> torch.Tensor:
        return output.opacity


class _WeightedTerm(torch.nn.Module):
    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = check_number("weight", weight, 0)


class DistortionLoss(_WeightedTerm):
    """mip-NeRF 360's distortion loss (Barron et al. 2022, eq. 15) of the final pass's
    weights, mean over rays, times ``weight``: pulls each ray's weights into one compact
    interval (fewer floaters). See :func:`nerf_lab.regularizers.distortion_loss`."""

    def forward(self, output: RenderOutput, targets: Targets) -> torch.Tensor:
        from nerf_lab.regularizers import distortion_loss
        from nerf_lab.resamplers import lengths_to_intervals

        starts, ends = lengths_to_intervals(output.lengths)
        return self.weight * distortion_loss(output.weights, starts, ends).mean()


class InterlevelLoss(_WeightedTerm):
    """mip-NeRF 360's proposal loss L_prop (nerfstudio's ``interlevel_loss``): trains the
    proposal fields of ``raysampler=proposal`` (their weights must bound the final pass's,
    which are detached), mean over rays, times ``weight``. Needs the proposal levels in
    ``output.aux`` (:class:`nerf_lab.proposal.ProposalOutputs`)."""

    def forward(self, output: RenderOutput, targets: Targets) -> torch.Tensor:
        from nerf_lab.proposal import ProposalOutputs
        from nerf_lab.regularizers import interlevel_loss
        from nerf_lab.resamplers import lengths_to_edges

        if not any(k.startswith("proposal_") for k in output.aux):
            raise ValueError(
                "The interlevel term needs proposal levels in the render output: use it with "
                "raysampler=proposal."
            )
        levels = ProposalOutputs.from_aux(output.aux)
        edges = lengths_to_edges(output.lengths)
        return self.weight * interlevel_loss(levels.edges, levels.weights, edges, output.weights)


class OpacityLoss(_WeightedTerm):
    """Binary entropy of the ray opacity (:func:`nerf_lab.regularizers.opacity_loss`), mean
    over rays, times ``weight``: pushes rays to be fully empty or fully opaque."""

    def forward(self, output: RenderOutput, targets: Targets) -> torch.Tensor:
        from nerf_lab.regularizers import opacity_loss

        return self.weight * opacity_loss(output.opacity).mean()


def combine_terms(
    terms: Mapping[str, LossTerm | None], output: RenderOutput, targets: Targets
) -> dict[str, torch.Tensor]:
    """Evaluate every named term (``None`` entries are switched off).

    Returns:
        ``{name: () tensor}``.
    """
    return {name: term(output, targets) for name, term in terms.items() if term is not None}
