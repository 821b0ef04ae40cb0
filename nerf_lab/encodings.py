"""Positional encodings."""

from __future__ import annotations

import torch


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

    Frequencies are ``omega0 * 2**k`` for ``k = 0 .. n_harmonic_functions - 1``.

    Args:
        n_harmonic_functions: number of frequencies.
        omega0: the lowest frequency.
        append_input: also append the raw input ``x`` at the end.

    ``forward(x (..., D))`` returns ``(..., 2 * D * n_harmonic_functions [+ D])``.
    """

    def __init__(
        self, n_harmonic_functions: int = 60, omega0: float = 0.1, append_input: bool = False
    ) -> None:
        super().__init__()
        if isinstance(n_harmonic_functions, bool) or not isinstance(n_harmonic_functions, int):
            raise ValueError(
                f"n_harmonic_functions must be an integer >= 1; got {n_harmonic_functions!r}."
            )
        if n_harmonic_functions < 1:
            raise ValueError(f"n_harmonic_functions must be >= 1; got {n_harmonic_functions!r}.")
        if not omega0 > 0:
            raise ValueError(f"omega0 must be > 0; got {omega0!r}.")
        self.n_harmonic_functions = n_harmonic_functions
        self.append_input = append_input
        self.register_buffer("frequencies", omega0 * (2.0 ** torch.arange(n_harmonic_functions)))

    def get_output_dim(self, input_dims: int = 3) -> int:
        """Embedding size for ``input_dims`` input coordinates."""
        return input_dims * (2 * self.n_harmonic_functions + int(self.append_input))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = harmonic_embedding(x, self.frequencies)
        if self.append_input:
            out = torch.cat((out, x), dim=-1)
        return out
