"""Inverse-transform sampling of piecewise-constant densities (NeRF's hierarchical sampling).

NeRF (Mildenhall et al. 2020, section 5.2) places the fine pass's samples by drawing from
the piecewise-constant PDF that the coarse pass's compositing weights define over depth
bins. PyTorch3D ships this as ``pytorch3d.renderer.implicit.sample_pdf``:

* :func:`sample_pdf` reproduces PyTorch3D's ``sample_pdf``, the function its
  ``ProbabilisticRaysampler`` calls (a C++/CUDA kernel there), with its signature, shapes,
  random draws and arithmetic: float32 results equal PyTorch3D's C++ CPU kernel bit for
  bit (the CUDA kernel walks the bins with a running subtraction and may contract to FMA,
  so it differs from both in the last bits).
* :func:`sample_pdf_python` reproduces PyTorch3D's ``sample_pdf_python``, the
  TensorFlow port of NeRF's ``sample_pdf``.

The two differ in how ``eps`` enters (PyTorch3D's own tests compare them with
``atol=2e-3``): ``sample_pdf`` adds ``eps`` once to the total weight, never samples inside
a zero-weight bin and maps a quantile beyond the total weight to the end of the last bin;
``sample_pdf_python`` adds ``eps`` to every bin, so zero-weight bins keep a tiny
probability (a sample landing there is put at the bin's start).

:func:`invert_cdf` is the kernel itself (quantiles in, samples out); samplers that want
stratified quantiles (one per stratum of ``[0, 1)``, :func:`stratified_quantiles`) call it
directly.
"""

from __future__ import annotations

import torch

from nerf_lab.validate import check_int

__all__ = ["invert_cdf", "sample_pdf", "sample_pdf_python", "stratified_quantiles"]


def _sequential_cumsum(weights: torch.Tensor) -> torch.Tensor:
    """Running sums accumulated left to right in ``weights.dtype``, exactly as a C loop.

    ``torch.cumsum`` accumulates float32 in float64 on the CPU (and in parallel on GPUs),
    which changes the last bits; PyTorch3D's kernel adds one float at a time.
    """
    out = torch.empty_like(weights)
    acc = torch.zeros_like(weights[..., 0])
    for i in range(weights.shape[-1]):
        acc = acc + weights[..., i]
        out[..., i] = acc
    return out


def invert_cdf(
    bins: torch.Tensor,
    weights: torch.Tensor,
    quantiles: torch.Tensor,
    eps: float = 1e-5,
    exact_cumsum: bool = True,
) -> torch.Tensor:
    """Map quantiles in [0, 1] through the inverse CDF of piecewise-constant densities.

    The arithmetic of PyTorch3D's ``SamplePdfCpu`` kernel, vectorised: with partial sums
    ``S_i = w_0 + ... + w_i`` and total ``W = S_{n_bins - 1} + eps``, a quantile ``u``
    becomes ``v = W u``; its bin ``i`` is the first with ``S_i >= v`` among the first
    ``n_bins - 1`` (else the last bin); with ``r = v - S_{i-1}`` the sample is

    * ``bins[i + 1]`` if ``r > w_i`` (only possible in the last bin),
    * ``bins[i] + (r / w_i) (bins[i + 1] - bins[i])`` if ``w_i > eps``,
    * ``bins[i]`` otherwise.

    So zero-weight bins receive no sample unless ``v = 0`` exactly (then the sample is
    ``bins[0]``) or all weights are zero (then ``v <= eps`` and every ``u > 0`` goes to the
    end of the last bin). Weights must be non-negative for the bin search to be the
    binary search of the kernel; values in ``(-eps, 0)`` (which PyTorch3D accepts) make
    the partial sums non-monotone and the chosen bin implementation-defined.

    Args:
        bins: ``(..., n_bins + 1)`` increasing bin edges.
        weights: ``(..., n_bins)`` non-negative (unnormalised) bin probabilities.
        quantiles: ``(..., n_samples)`` values in [0, 1].
        eps: added once to the total weight; bins of weight ``<= eps`` are not
            interpolated.
        exact_cumsum: accumulate the partial sums one bin at a time in the input dtype
            (bit-exact with PyTorch3D's CPU kernel, ``n_bins`` small ops); ``False`` uses
            ``torch.cumsum`` (one op, last-bit differences; made monotone with
            ``cummax``).

    Returns:
        ``(..., n_samples)`` samples in ``[bins[..., 0], bins[..., -1]]``, in the dtype
        of ``bins``/``weights``/``quantiles`` promoted together; non-decreasing where the
        quantiles are.
    """
    dtype = torch.promote_types(torch.promote_types(bins.dtype, weights.dtype), quantiles.dtype)
    bins, weights, quantiles = bins.to(dtype), weights.to(dtype), quantiles.to(dtype)
    eps_t = torch.tensor(eps, dtype=dtype, device=weights.device)
    if exact_cumsum:
        partial = _sequential_cumsum(weights)
    else:
        partial = torch.cummax(torch.cumsum(weights, dim=-1), dim=-1).values
    total = partial[..., -1:] + eps_t
    uniform = total * quantiles
    # std::lower_bound over the first n_bins - 1 partial sums.
    i_bin = torch.searchsorted(partial[..., :-1].contiguous(), uniform.contiguous(), right=False)
    previous = torch.gather(partial, -1, (i_bin - 1).clamp(min=0))
    uniform = torch.where(i_bin > 0, uniform - previous, uniform)
    start = torch.gather(bins, -1, i_bin)
    end = torch.gather(bins, -1, i_bin + 1)
    bin_weight = torch.gather(weights, -1, i_bin)
    interpolate = bin_weight > eps_t
    safe_weight = torch.where(interpolate, bin_weight, torch.ones_like(bin_weight))
    inside = torch.where(interpolate, start + (uniform / safe_weight) * (end - start), start)
    return torch.where(uniform > bin_weight, end, inside)


def stratified_quantiles(
    batch_shape: torch.Size | tuple[int, ...],
    n_samples: int,
    stratified: bool,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One quantile per stratum ``[k / n_samples, (k + 1) / n_samples)``.

    Args:
        batch_shape: leading shape ``(...)``.
        n_samples: strata per row.
        stratified: a uniform random position in each stratum (the global torch RNG);
            ``False``: the stratum centres ``(k + 0.5) / n_samples``.

    Returns:
        ``(..., n_samples)`` increasing quantiles in (0, 1) (a random draw of exactly 0
        in the first stratum is the only way to get 0).
    """
    k = torch.arange(n_samples, device=device, dtype=dtype)
    shape = (*batch_shape, n_samples)
    if stratified:
        return (k + torch.rand(shape, device=device, dtype=dtype)) / n_samples
    return ((k + 0.5) / n_samples).expand(shape).contiguous()


def _check_inputs(bins: torch.Tensor, weights: torch.Tensor, n_samples: int) -> None:
    check_int("n_samples", n_samples)
    if weights.dim() < 1 or weights.shape[-1] < 1:
        raise ValueError(f"weights must have shape (..., n_bins) with n_bins >= 1; got "
                         f"{tuple(weights.shape)}.")  # fmt: skip
    if bins.shape[-1] != weights.shape[-1] + 1 or bins.shape[:-1] != weights.shape[:-1]:
        raise ValueError(
            f"Inconsistent shapes of bins and weights: {tuple(bins.shape)}{tuple(weights.shape)}"
        )


def sample_pdf(
    bins: torch.Tensor,
    weights: torch.Tensor,
    n_samples: int,
    det: bool = False,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Sample piecewise-constant PDFs given by bin edges and per-bin weights.

    PyTorch3D's ``pytorch3d.renderer.implicit.sample_pdf`` (the C++/CUDA-backed function
    that ``ProbabilisticRaysampler`` uses): the same checks, the same quantiles (float32
    ``torch.linspace(0, 1, n_samples)`` for ``det``, else one float32 ``torch.rand`` draw
    of shape ``(..., n_samples)`` from the global RNG) and the arithmetic of
    :func:`invert_cdf`. Random samples are not sorted (the quantiles are i.i.d.);
    deterministic ones are.

    Args:
        bins: ``(..., n_bins + 1)`` increasing bin edges.
        weights: ``(..., n_bins)`` non-negative bin probabilities (unnormalised).
        n_samples: samples per row.
        det: evenly spaced quantiles from 0 to 1 inclusive instead of random ones.
        eps: added to the total weight; prevents a division by zero for empty bins.

    Returns:
        ``(..., n_samples)`` samples, float32 for float32 inputs (float64 inputs, which
        PyTorch3D rejects, give float64 from the same float32 quantiles).

    Raises:
        NotImplementedError: gradients are enabled and an input requires grad (the
            samples are not differentiable, as in PyTorch3D).
        ValueError: a weight ``<= -eps``, or inconsistent shapes.
    """
    if torch.is_grad_enabled() and (bins.requires_grad or weights.requires_grad):
        raise NotImplementedError("sample_pdf differentiability.")
    _check_inputs(bins, weights, n_samples)
    output_shape = (*bins.shape[:-1], n_samples)
    if weights.numel() == 0:
        return torch.empty(output_shape, dtype=torch.float32, device=bins.device)
    if weights.min() <= -eps:
        raise ValueError("Negative weights provided.")
    if det:
        u = torch.linspace(0.0, 1.0, n_samples, device=bins.device, dtype=torch.float32)
        u = u.expand(output_shape).contiguous()
    else:
        u = torch.rand(output_shape, dtype=torch.float32, device=bins.device)
    dtype = torch.promote_types(torch.promote_types(bins.dtype, weights.dtype), torch.float32)
    return invert_cdf(bins.to(dtype), weights.to(dtype), u.to(dtype), eps)


def sample_pdf_python(
    bins: torch.Tensor,
    weights: torch.Tensor,
    N_samples: int,
    det: bool = False,
    eps: float = 1e-5,
) -> torch.Tensor:
    """PyTorch3D's ``sample_pdf_python``: NeRF's TensorFlow ``sample_pdf`` in PyTorch.

    The PDF is ``(w + eps) / sum(w + eps)``; a quantile ``u`` falls into the bin whose CDF
    interval contains it (``searchsorted(cdf, u, right=True)``) and is interpolated
    linearly inside it; a bin whose CDF step is ``< eps`` puts the sample at
    ``bins[i] + (u - cdf_i)`` (its step is treated as 1).

    Args:
        bins: ``(..., n_bins + 1)`` increasing bin edges.
        weights: ``(..., n_bins)`` non-negative bin probabilities.
        N_samples: samples per row.
        det: evenly spaced quantiles ``linspace(0, 1, N_samples)`` instead of random ones
            (drawn in the CDF's dtype).
        eps: added to every weight.

    Returns:
        ``(..., N_samples)`` samples.
    """
    _check_inputs(bins, weights, N_samples)
    weights = weights + eps
    if weights.min() <= 0:
        raise ValueError("Negative weights provided.")
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)
    shape = [*cdf.shape[:-1], N_samples]
    if det:
        u = torch.linspace(0.0, 1.0, N_samples, device=cdf.device, dtype=cdf.dtype)
        u = u.expand(shape).contiguous()
    else:
        u = torch.rand(shape, device=cdf.device, dtype=cdf.dtype)
    inds = torch.searchsorted(cdf, u, right=True)
    below = (inds - 1).clamp(0)
    above = inds.clamp(max=cdf.shape[-1] - 1)
    cdf_below, cdf_above = torch.gather(cdf, -1, below), torch.gather(cdf, -1, above)
    bins_below, bins_above = torch.gather(bins, -1, below), torch.gather(bins, -1, above)
    denom = cdf_above - cdf_below
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    t = (u - cdf_below) / denom
    return bins_below + t * (bins_above - bins_below)
