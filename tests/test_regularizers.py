"""Regularisers: analytic values, O(n^2) / plain-loop references and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from nerf_lab.regularizers import (
    distortion_loss,
    interlevel_loss,
    lossfun_outer,
    opacity_loss,
    outer,
)


def random_intervals(n_rays: int, n: int, gaps: bool, dtype=torch.float64):
    edges = torch.cumsum(torch.rand(n_rays, 2 * n if gaps else n + 1, dtype=dtype) + 0.05, -1)
    if gaps:  # [e_0, e_1), [e_2, e_3), ...: disjoint intervals with gaps between them
        return edges[:, 0::2], edges[:, 1::2]
    return edges[:, :-1], edges[:, 1:]


def distortion_quadratic(w, s, e):
    """mip-NeRF 360 eq. 15 as written: a double loop over intervals."""
    out = torch.zeros(w.shape[0], dtype=w.dtype)
    for r in range(w.shape[0]):
        m = 0.5 * (s[r] + e[r])
        total = 0.0
        for i in range(w.shape[1]):
            for j in range(w.shape[1]):
                total = total + w[r, i] * w[r, j] * (m[i] - m[j]).abs()
            total = total + w[r, i] ** 2 * (e[r, i] - s[r, i]) / 3.0
        out[r] = total
    return out


@pytest.mark.parametrize("gaps", [False, True])
def test_distortion_equals_the_quadratic_form(gaps):
    s, e = random_intervals(5, 12, gaps)
    w = torch.rand(5, 12, dtype=torch.float64)
    got = distortion_loss(w, s, e)
    assert got.shape == (5,)
    torch.testing.assert_close(got, distortion_quadratic(w, s, e))


def test_distortion_analytic_values():
    # uniform density 1/2 on [0, 2]: E|u - v| = 2 / 3
    w = torch.tensor([[0.5, 0.5]])
    s, e = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(distortion_loss(w, s, e), torch.tensor([2.0 / 3.0]))
    # one interval of length L and weight 1: L / 3
    w1 = torch.ones(1, 1)
    torch.testing.assert_close(
        distortion_loss(w1, torch.tensor([[1.0]]), torch.tensor([[4.0]])), torch.tensor([1.0])
    )
    # all weight in two points far apart: w1 w2 |m1 - m2| twice
    w2 = torch.tensor([[0.3, 0.0, 0.7]])
    s2, e2 = torch.tensor([[0.0, 1.0, 5.0]]), torch.tensor([[1e-9, 5.0, 5.0 + 1e-9]])
    torch.testing.assert_close(
        distortion_loss(w2, s2, e2), torch.tensor([2 * 0.3 * 0.7 * 5.0]), atol=1e-6, rtol=0
    )


def test_distortion_gradients():
    s, e = random_intervals(3, 6, gaps=False)
    w = torch.rand(3, 6, dtype=torch.float64, requires_grad=True)
    s = s.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda w, s: distortion_loss(w, s, e), (w, s))


def outer_loop(t0s, t0e, t1s, t1e, y1):
    """Sum of y1[k] over key intervals touching the query (t1s[k] <= b, t1e[k] > a), with
    nerfstudio's clamping: the first key counts for a query ending before it, the last for
    a query starting after it."""
    out = torch.zeros(t0s.shape, dtype=y1.dtype)
    n1 = y1.shape[-1]
    for r in range(t0s.shape[0]):
        for i in range(t0s.shape[1]):
            a, b = t0s[r, i], t0e[r, i]
            ks = [k for k in range(n1) if t1s[r, k] <= b and t1e[r, k] > a]
            if b < t1s[r, 0]:
                ks = [0]
            if a >= t1e[r, -1]:
                ks = [n1 - 1]
            out[r, i] = sum((y1[r, k] for k in ks), torch.zeros((), dtype=y1.dtype))
    return out


def test_outer_equals_a_plain_loop():
    t1 = torch.sort(torch.rand(4, 9, dtype=torch.float64), dim=-1).values * 2 + 1  # keys
    t0 = torch.sort(torch.rand(4, 15, dtype=torch.float64), dim=-1).values * 4  # wider
    y1 = torch.rand(4, 8, dtype=torch.float64)
    got = outer(t0[:, :-1], t0[:, 1:], t1[:, :-1], t1[:, 1:], y1)
    torch.testing.assert_close(got, outer_loop(t0[:, :-1], t0[:, 1:], t1[:, :-1], t1[:, 1:], y1))


def test_lossfun_outer_equals_a_plain_loop_and_is_zero_for_an_envelope():
    t = torch.sort(torch.rand(3, 11, dtype=torch.float64), dim=-1).values
    t_env = torch.sort(torch.rand(3, 7, dtype=torch.float64), dim=-1).values
    t_env[:, 0], t_env[:, -1] = 0.0, 1.0
    w = torch.rand(3, 10, dtype=torch.float64) / 10
    w_env = torch.rand(3, 6, dtype=torch.float64) / 6
    got = lossfun_outer(t, w, t_env, w_env)
    w_out = outer_loop(t[:, :-1], t[:, 1:], t_env[:, :-1], t_env[:, 1:], w_env)
    torch.testing.assert_close(got, torch.clamp(w - w_out, min=0) ** 2 / (w + 1e-7))
    # the same histogram bounds itself: no loss
    assert lossfun_outer(t, w, t, w).abs().max() == 0


def test_interlevel_loss_analytic_and_gradient_only_into_the_proposal():
    # final: weight 1 on [0, 1) of [0, 1), [1, 2); proposal: 0.5 on one interval [0, 2)
    edges = torch.tensor([[0.0, 1.0, 2.0]])
    weights = torch.tensor([[1.0, 0.0]], requires_grad=True)
    p_edges = torch.tensor([[0.0, 2.0]])
    p_weights = torch.tensor([[0.5]], requires_grad=True)
    loss = interlevel_loss([p_edges], [p_weights], edges, weights)
    # interval 0: (1 - 0.5)^2 / (1 + eps); interval 1: 0; mean over the 2 intervals
    torch.testing.assert_close(loss, torch.tensor(0.25 / (1 + 1e-7) / 2))
    loss.backward()
    assert weights.grad is None
    torch.testing.assert_close(p_weights.grad, torch.tensor([[-2 * 0.5 / (1 + 1e-7) / 2]]))
    two = interlevel_loss([p_edges, p_edges], [p_weights, p_weights], edges, weights)
    torch.testing.assert_close(two, 2 * loss.detach())
    with pytest.raises(ValueError, match="same length"):
        interlevel_loss([p_edges], [], edges, weights)


def test_lossfun_outer_gradients():
    t = torch.linspace(0, 1, 9, dtype=torch.float64)[None]
    t_env = torch.linspace(0, 1, 5, dtype=torch.float64)[None]
    w = torch.full((1, 8), 0.27, dtype=torch.float64, requires_grad=True)
    w_env = torch.tensor([[0.1, 0.2, 0.05, 0.4]], dtype=torch.float64, requires_grad=True)
    assert (w - outer(t[:, :-1], t[:, 1:], t_env[:, :-1], t_env[:, 1:], w_env)).abs().min() > 1e-3
    assert torch.autograd.gradcheck(lambda a, b: lossfun_outer(t, a, t_env, b), (w, w_env))


def test_opacity_loss_values_and_gradients():
    o = torch.tensor([0.5, 0.25, 0.0, 1.0])
    h = opacity_loss(o)
    torch.testing.assert_close(h[0], torch.tensor(math.log(2.0)))
    torch.testing.assert_close(h[1], torch.tensor(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75))))
    assert h[2] < 1e-4 and h[3] < 1e-4
    x = torch.tensor([0.0, 1.0, 0.3], requires_grad=True)
    opacity_loss(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad[2], torch.tensor(math.log(0.7 / 0.3)))
    y = torch.tensor([[0.1], [0.6], [0.95]], dtype=torch.float64, requires_grad=True)
    assert opacity_loss(y).shape == (3, 1)
    assert torch.autograd.gradcheck(opacity_loss, (y,))
