"""sample_pdf: PyTorch3D's numbers (its C++ kernel, looped in float32), shapes and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nerf_lab.sample_pdf import invert_cdf, sample_pdf, sample_pdf_python, stratified_quantiles


def kernel_loop(bins: torch.Tensor, weights: torch.Tensor, u: torch.Tensor, eps: float):
    """PyTorch3D's ``SamplePdfCpu_worker``, one ray and one sample at a time, in float32."""
    b = bins.reshape(-1, bins.shape[-1]).numpy().astype(np.float32)
    w = weights.reshape(-1, weights.shape[-1]).numpy().astype(np.float32)
    q = u.reshape(-1, u.shape[-1]).numpy().astype(np.float32)
    out = np.empty_like(q)
    eps32 = np.float32(eps)
    n_bins = w.shape[1]
    for r in range(w.shape[0]):
        partial = []
        total = np.float32(0.0)
        for i in range(n_bins):
            total = np.float32(total + w[r, i])
            partial.append(total)
        total = np.float32(total + eps32)
        for s in range(q.shape[1]):
            uniform = np.float32(total * q[r, s])
            i_bin = 0  # first of partial[:n_bins - 1] that is >= uniform, else n_bins - 1
            while i_bin < n_bins - 1 and partial[i_bin] < uniform:
                i_bin += 1
            if i_bin > 0:
                uniform = np.float32(uniform - partial[i_bin - 1])
            start, end, bw = b[r, i_bin], b[r, i_bin + 1], w[r, i_bin]
            value = start
            if uniform > bw:
                value = end
            elif bw > eps32:
                value = np.float32(start + np.float32(np.float32(uniform / bw) * (end - start)))
            out[r, s] = value
    return torch.from_numpy(out).reshape(u.shape)


def random_pdf(batch: tuple[int, ...], n_bins: int, zero_fraction: float = 0.3):
    weights = torch.rand(batch + (n_bins,))
    weights[torch.rand(weights.shape) < zero_fraction] = 0.0
    bins = torch.cumsum(torch.rand(batch + (n_bins + 1,)), dim=-1)
    return bins, weights


@pytest.mark.parametrize("batch", [(), (1, 4), (31,), (3, 5)])
@pytest.mark.parametrize("n_bins", [1, 7, 20])
@pytest.mark.parametrize("det", [True, False])
def test_sample_pdf_equals_the_cpp_kernel_bit_for_bit(batch, n_bins, det):
    bins, weights = random_pdf(batch, n_bins)
    for n_samples in (1, 2, 33):
        if det:
            u = torch.linspace(0.0, 1.0, n_samples).expand(batch + (n_samples,))
            out = sample_pdf(bins, weights, n_samples, det=True)
        else:
            torch.manual_seed(7)
            u = torch.rand(batch + (n_samples,))
            torch.manual_seed(7)
            out = sample_pdf(bins, weights, n_samples)
        assert out.shape == batch + (n_samples,) and out.dtype == torch.float32
        assert torch.equal(out, kernel_loop(bins, weights, u, 1e-5))


def test_sample_pdf_eps_is_part_of_the_kernel():
    bins, weights = random_pdf((6,), 5)
    weights[0] = 1e-6  # below eps: no interpolation inside those bins
    u = torch.rand(6, 9)
    for eps in (1e-5, 1e-2, 0.0):
        got = invert_cdf(bins, weights, u, eps)
        assert torch.equal(got, kernel_loop(bins, weights, u, eps))


def test_sample_pdf_agrees_with_sample_pdf_python_as_in_pytorch3d():
    # PyTorch3D's own test compares its kernel with the Python version at atol=2e-3.
    for batch in [(), (1, 4), (33,)]:
        weights = torch.rand(batch + (20,))
        bins = torch.cumsum(torch.rand(batch + (21,)), dim=-1)
        for n_samples in (2, 31):
            a = sample_pdf(bins, weights, n_samples, det=True)
            b = sample_pdf_python(bins, weights, n_samples, det=True)
            torch.testing.assert_close(a, b, atol=2e-3, rtol=0)
    weights = torch.rand(9, 11)
    bins = torch.cumsum(torch.rand(9, 12), dim=-1)
    torch.manual_seed(1)
    a = sample_pdf(bins, weights, 17)
    torch.manual_seed(1)
    b = sample_pdf_python(bins, weights, 17)
    torch.testing.assert_close(a, b, atol=2e-3, rtol=0)


def test_uniform_pdf_gives_evenly_spaced_samples():
    bins = torch.linspace(2.0, 5.0, 11).expand(4, 11)
    weights = torch.ones(4, 10)
    for fn in (sample_pdf, sample_pdf_python):
        out = fn(bins, weights, 25, det=True)
        torch.testing.assert_close(out, torch.linspace(2.0, 5.0, 25).expand(4, 25), atol=1e-4,
                                   rtol=0)  # fmt: skip


def test_single_bin_as_pytorch3d():
    bins = (torch.arange(2) + 17).expand(5, 2).float()
    weights = torch.ones(5, 1)
    for fn in (sample_pdf, sample_pdf_python):
        out = fn(bins, weights, 100, True)
        torch.testing.assert_close(out, torch.linspace(17, 18, 100).expand(5, -1))


def test_no_gap_pdf_is_deterministic_as_pytorch3d():
    weights = torch.tensor([0.0, 10.0, 0.0])
    bins = torch.tensor([0.0, 10.0, 10.0, 25.0])
    for fn in (sample_pdf, sample_pdf_python):
        torch.testing.assert_close(fn(bins, weights, 8), torch.full((8,), 10.0))


def test_one_bin_pdf_puts_every_sample_in_that_bin():
    n_rays, n_bins = 50, 16
    bins = torch.cumsum(torch.rand(n_rays, n_bins + 1) + 0.1, dim=-1)
    which = torch.randint(n_bins, (n_rays,))
    weights = torch.zeros(n_rays, n_bins)
    weights[torch.arange(n_rays), which] = torch.rand(n_rays) + 0.5
    lo = bins[torch.arange(n_rays), which][:, None]
    hi = bins[torch.arange(n_rays), which + 1][:, None]
    for det in (True, False):
        out = sample_pdf(bins, weights, 200, det=det)
        inside = (out >= lo) & (out <= hi)
        if det:
            assert inside[:, 1:-1].all()
            # u = 0 maps to the first edge and u = 1 (beyond W = sum + eps) to the last one
            torch.testing.assert_close(out[:, 0], bins[:, 0])
            torch.testing.assert_close(out[:, -1], bins[:, -1])
        else:
            assert inside.all()


def test_zero_weight_bins_are_never_sampled():
    bins, weights = random_pdf((40,), 12, zero_fraction=0.5)
    weights[:, 3] = 1.0  # every ray has some weight
    out = sample_pdf(bins, weights, 64)
    idx = torch.searchsorted(bins, out, right=True).clamp(1, 12) - 1
    at_edge = (out == torch.gather(bins, -1, idx)) & (idx > 0)
    # a sample on the left edge of bin idx may belong to the (positive) bin before it
    ok = (torch.gather(weights, -1, idx) > 0) | (
        at_edge & (torch.gather(weights, -1, (idx - 1).clamp(min=0)) > 0)
    )
    assert ok.all()


def test_all_zero_weights_follow_the_kernel():
    # W = eps: u = 0 gives the first edge, any u > 0 the end of the last bin.
    bins = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    out = sample_pdf(bins, torch.zeros(1, 3), 4, det=True)
    assert out.tolist() == [[0.0, 3.0, 3.0, 3.0]]


def test_det_samples_are_sorted_and_batch_shapes_are_kept():
    bins, weights = random_pdf((2, 3, 4), 9)
    out = sample_pdf(bins, weights, 13, det=True)
    assert out.shape == (2, 3, 4, 13)
    assert (out[..., 1:] >= out[..., :-1]).all()
    assert (out >= bins[..., :1]).all() and (out <= bins[..., -1:]).all()


def test_vectorised_equals_a_per_ray_loop():
    bins, weights = random_pdf((6, 5), 10)
    torch.manual_seed(3)
    out = sample_pdf(bins, weights, 21)
    torch.manual_seed(3)
    u = torch.rand(6, 5, 21)
    for i in range(6):
        for j in range(5):
            one = invert_cdf(bins[i, j], weights[i, j], u[i, j], 1e-5)
            assert torch.equal(out[i, j], one)


def test_float64_inputs_give_float64_close_to_float32():
    bins, weights = random_pdf((8,), 10)
    a = sample_pdf(bins, weights, 16, det=True)
    b = sample_pdf(bins.double(), weights.double(), 16, det=True)
    assert b.dtype == torch.float64
    torch.testing.assert_close(b.float(), a, atol=1e-5, rtol=1e-5)


def test_errors_as_pytorch3d():
    bins, weights = random_pdf((3,), 4)
    with pytest.raises(ValueError, match="Negative weights"):
        sample_pdf(bins, weights - 1.0, 5)
    with pytest.raises(ValueError, match="Inconsistent shapes"):
        sample_pdf(bins[:, :-1], weights, 5)
    with pytest.raises(NotImplementedError, match="differentiability"):
        sample_pdf(bins, weights.requires_grad_(), 5)
    with torch.no_grad():
        sample_pdf(bins, weights, 5)
    with pytest.raises(ValueError, match="n_samples"):
        sample_pdf(bins, weights.detach(), 0)


def test_stratified_quantiles_one_per_stratum():
    u = stratified_quantiles((50,), 8, stratified=True)
    k = torch.arange(8)
    assert ((u >= k / 8) & (u < (k + 1) / 8)).all()
    torch.testing.assert_close(stratified_quantiles((2,), 4, False)[0], (k[:4] + 0.5) / 4)
