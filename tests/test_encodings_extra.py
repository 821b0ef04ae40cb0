"""HarmonicEmbedding's PyTorch3D-library options and the spherical-harmonics encoding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nerf_lab.encodings import (
    HarmonicEmbedding,
    SphericalHarmonicsEncoding,
    spherical_harmonics,
)


def pytorch3d_library_embedding(x, n, omega_0=1.0, logspace=True, append_input=True):
    """PyTorch3D's library HarmonicEmbedding.forward, written out: sin(x + [0, pi/2])."""
    # PyTorch3D builds the frequencies in float32.
    if logspace:
        freqs = 2.0 ** torch.arange(n, dtype=torch.float32)
    else:
        freqs = torch.linspace(1.0, 2.0 ** (n - 1), n, dtype=torch.float32)
    freqs = (freqs * omega_0).to(x.dtype)
    embed = x[..., None] * freqs  # (..., dim, n)
    embed = (
        embed[..., None, :, :] + torch.tensor([0.0, 0.5 * math.pi], dtype=x.dtype)[:, None, None]
    )
    embed = embed.sin().reshape(*x.shape[:-1], -1)
    return torch.cat([embed, x], dim=-1) if append_input else embed


@pytest.mark.parametrize("logspace", [True, False])
@pytest.mark.parametrize("append_input", [True, False])
def test_harmonic_embedding_matches_pytorch3d_library(logspace, append_input):
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    emb = HarmonicEmbedding(6, omega0=1.0, append_input=append_input, logspace=logspace).double()
    ref = pytorch3d_library_embedding(x, 6, 1.0, logspace, append_input)
    assert emb(x).shape == ref.shape == (4, 7, emb.get_output_dim(3))
    torch.testing.assert_close(emb(x), ref, rtol=0, atol=1e-12)


def test_harmonic_embedding_tutorial_defaults_unchanged():
    emb = HarmonicEmbedding()
    assert emb.n_harmonic_functions == 60 and not emb.append_input and emb.logspace
    torch.testing.assert_close(emb.frequencies, 0.1 * 2.0 ** torch.arange(60))
    assert list(emb.state_dict()) == ["frequencies"]


def test_harmonic_embedding_rejects_bad_logspace():
    with pytest.raises(ValueError, match="logspace"):
        HarmonicEmbedding(4, logspace="yes")


def _sphere_quadrature(n_theta: int = 64, n_phi: int = 128):
    """Gauss-Legendre in cos(theta) x uniform in phi: exact for these polynomials."""
    nodes_np, weights_np = np.polynomial.legendre.leggauss(n_theta)
    nodes = torch.tensor(nodes_np)
    weights = torch.tensor(weights_np)
    phi = torch.arange(n_phi, dtype=torch.float64) * (2 * math.pi / n_phi)
    z = nodes[:, None].expand(-1, n_phi)
    r = (1 - z**2).sqrt()
    dirs = torch.stack((r * phi.cos(), r * phi.sin(), z), dim=-1).reshape(-1, 3)
    w = (weights[:, None] * (2 * math.pi / n_phi)).expand(-1, n_phi).reshape(-1)
    return dirs, w


@pytest.mark.parametrize("degree", [1, 2, 3, 4, 5])
def test_spherical_harmonics_are_orthonormal(degree):
    dirs, w = _sphere_quadrature()
    y = spherical_harmonics(dirs, degree)
    assert y.shape == (dirs.shape[0], degree**2)
    gram = (y * w[:, None]).T @ y
    torch.testing.assert_close(gram, torch.eye(degree**2, dtype=torch.float64), atol=1e-10, rtol=0)


def test_spherical_harmonics_closed_forms_and_band_order():
    d = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64), dim=-1)
    x, y, z = d.unbind(-1)
    sh = spherical_harmonics(d, 4)
    torch.testing.assert_close(sh[:, 0], torch.full_like(x, 0.5 / math.sqrt(math.pi)))
    c1 = math.sqrt(3 / (4 * math.pi))
    torch.testing.assert_close(sh[:, 1:4], torch.stack((c1 * y, c1 * z, c1 * x), -1))
    # Y_2^0 = sqrt(5 / (16 pi)) (3 z^2 - 1); Y_3^0 = sqrt(7 / (16 pi)) (5 z^3 - 3 z).
    torch.testing.assert_close(sh[:, 6], math.sqrt(5 / (16 * math.pi)) * (3 * z**2 - 1))
    torch.testing.assert_close(sh[:, 12], math.sqrt(7 / (16 * math.pi)) * (5 * z**3 - 3 * z))
    # Each band is rotation invariant: sum_m Y_l^m(d)^2 = (2l + 1) / (4 pi).
    for band in range(4):
        part = sh[:, band**2 : (band + 1) ** 2].square().sum(-1)
        torch.testing.assert_close(part, torch.full_like(part, (2 * band + 1) / (4 * math.pi)))


def test_spherical_harmonics_encoding_normalises_and_has_gradients():
    enc = SphericalHarmonicsEncoding(4)
    d = torch.randn(10, 3, dtype=torch.float64)
    torch.testing.assert_close(
        enc(3.0 * d), spherical_harmonics(torch.nn.functional.normalize(d), 4)
    )
    assert enc.get_output_dim() == 16
    torch.autograd.gradcheck(lambda v: enc(v), (d.clone().requires_grad_(True),))


@pytest.mark.parametrize("degree", [0, 6, 2.0, True])
def test_spherical_harmonics_rejects_bad_degree(degree):
    with pytest.raises(ValueError, match="degree"):
        SphericalHarmonicsEncoding(degree)
