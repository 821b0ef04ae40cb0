"""Positional encodings."""

from __future__ import annotations

import torch

from nerf_lab.validate import check_bool, check_int, check_number


def harmonic_embedding(x: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """``[sin(x_i * f_k), cos(x_i * f_k)]`` in the tutorial's order.

    The output is the sines then the cosines; within each block the index runs over
    coordinates first, frequencies second: ``sin(x_0 f_0), sin(x_0 f_1), ...,
    sin(x_1 f_0), ...``.

    Args:
        x: ``(..., D)``.
        frequencies: ``(n_harmonic_functions,)``.

    Returns:
        ``(..., 2 * D * n_harmonic_functions)``.
    """
    n = x.shape[-1] * len(frequencies)
    embed = (x[..., None] * frequencies).reshape(*x.shape[:-1], n)
    if embed.requires_grad and torch.is_grad_enabled():
        return torch.cat((embed.sin(), embed.cos()), dim=-1)
    # No gradient needed (the usual case: ray points): write both halves in place.
    out = embed.new_empty(*embed.shape[:-1], 2 * n)
    torch.sin(embed, out=out[..., :n])
    torch.cos(embed, out=out[..., n:])
    return out


class HarmonicEmbedding(torch.nn.Module):
    """The tutorial's harmonic (Fourier-feature) embedding.

    Frequencies are ``omega0 * 2**k`` for ``k = 0 .. n_harmonic_functions - 1``
    (``logspace=True``, the default) or ``omega0 * linspace(1, 2**(n - 1), n)``
    (``logspace=False``, as PyTorch3D's library ``HarmonicEmbedding``).

    PyTorch3D's library ``HarmonicEmbedding()`` (used by ``projects/nerf``) is
    ``HarmonicEmbedding(n, omega0=1.0, append_input=True)`` here: the same frequencies and
    the same feature order (sines, cosines, then the input).

    Args:
        n_harmonic_functions: number of frequencies.
        omega0: the lowest frequency.
        append_input: also append the raw input ``x`` at the end.
        logspace: frequencies in powers of two (else linearly spaced).

    ``forward(x (..., D))`` returns ``(..., 2 * D * n_harmonic_functions [+ D])``.
    """

    def __init__(
        self,
        n_harmonic_functions: int = 60,
        omega0: float = 0.1,
        append_input: bool = False,
        logspace: bool = True,
    ) -> None:
        super().__init__()
        self.n_harmonic_functions = check_int("n_harmonic_functions", n_harmonic_functions)
        check_number("omega0", omega0, 0, low_open=True)
        self.append_input = append_input
        self.logspace = check_bool("logspace", logspace)
        if logspace:
            frequencies = 2.0 ** torch.arange(n_harmonic_functions)
        else:
            frequencies = torch.linspace(
                1.0, 2.0 ** (n_harmonic_functions - 1), n_harmonic_functions
            )
        self.register_buffer("frequencies", omega0 * frequencies)

    def get_output_dim(self, input_dims: int = 3) -> int:
        """Embedding size for ``input_dims`` input coordinates."""
        return input_dims * (2 * self.n_harmonic_functions + int(self.append_input))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = harmonic_embedding(x, self.frequencies)
        if self.append_input:
            out = torch.cat((out, x), dim=-1)
        return out


# ---------------------------------------------------------------------------------------
# Spherical harmonics (view directions of the Instant-NGP-style decoders)
# ---------------------------------------------------------------------------------------
#: Largest supported number of bands (l = 0 .. 4).
MAX_SH_DEGREE = 5


def spherical_harmonics(directions: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """Real, orthonormal spherical harmonics ``Y_l^m`` of unit directions.

    ``degree`` counts bands, as tiny-cuda-nn's ``"SphericalHarmonics"`` encoding (which
    Instant-NGP, nerfacc and K-Planes use with ``degree=4``): bands ``l = 0 .. degree - 1``,
    ``degree**2`` components, ordered by ``l`` then ``m = -l .. l``. The basis is
    orthonormal on the unit sphere: ``integral Y_i Y_j dOmega = delta_ij``.

    Args:
        directions: ``(..., 3)`` unit vectors ``(x, y, z)``.
        degree: number of bands, 1 to :data:`MAX_SH_DEGREE`.

    Returns:
        ``(..., degree**2)``.
    """
    check_int("degree", degree, 1, MAX_SH_DEGREE)
    x, y, z = directions.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [0.4886025119029199 * y, 0.4886025119029199 * z, 0.4886025119029199 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            1.0925484305920792 * x * y,
            1.0925484305920792 * y * z,
            0.31539156525252005 * (3 * zz - 1),
            1.0925484305920792 * x * z,
            0.5462742152960396 * (xx - yy),
        ]
    if degree > 3:
        out += [
            0.5900435899266435 * y * (3 * xx - yy),
            2.890611442640554 * x * y * z,
            0.4570457994644658 * y * (5 * zz - 1),
            0.3731763325901154 * z * (5 * zz - 3),
            0.4570457994644658 * x * (5 * zz - 1),
            1.445305721320277 * z * (xx - yy),
            0.5900435899266435 * x * (xx - 3 * yy),
        ]
    if degree > 4:
        out += [
            2.5033429417967046 * x * y * (xx - yy),
            1.7701307697799304 * y * z * (3 * xx - yy),
            0.9461746957575601 * x * y * (7 * zz - 1),
            0.6690465435572892 * y * z * (7 * zz - 3),
            0.10578554691520431 * (35 * zz * zz - 30 * zz + 3),
            0.6690465435572892 * x * z * (7 * zz - 3),
            0.47308734787878004 * (xx - yy) * (7 * zz - 1),
            1.7701307697799304 * x * z * (xx - 3 * yy),
            0.6258357354491761 * (xx * (xx - 3 * yy) - yy * (3 * xx - yy)),
        ]
    return torch.stack(out, dim=-1)


class SphericalHarmonicsEncoding(torch.nn.Module):
    """:func:`spherical_harmonics` of normalised directions.

    Args:
        degree: number of bands (4: 16 components, as Instant-NGP).

    ``forward(directions (..., 3))`` normalises the directions (any length but 0) and
    returns ``(..., degree**2)``.
    """

    def __init__(self, degree: int = 4) -> None:
        super().__init__()
        spherical_harmonics(torch.zeros(1, 3), degree)  # validates
        self.degree = degree

    def get_output_dim(self) -> int:
        """``degree**2``."""
        return self.degree**2

    def forward(self, directions: torch.Tensor) -> torch.Tensor:
        return spherical_harmonics(torch.nn.functional.normalize(directions, dim=-1), self.degree)
