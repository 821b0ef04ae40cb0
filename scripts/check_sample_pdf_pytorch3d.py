"""Compare nerf_lab's sample_pdf with PyTorch3D's own C++ CPU kernel, compiled from source.

PyTorch3D cannot be installed here, but its kernel is one self-contained file. Give this
script that file (``pytorch3d/csrc/sample_pdf/sample_pdf_cpu.cpp`` of a PyTorch3D
checkout); it builds it as a torch extension (needs a C++ compiler; about a minute),
feeds both implementations the same quantiles (PyTorch3D's ``sample_pdf`` fills the
output with ``linspace``/``rand`` and lets the kernel overwrite it) and prints one JSON
line: cases, samples compared, samples that differ and the largest difference.

    python scripts/check_sample_pdf_pytorch3d.py PYTORCH3D/csrc/sample_pdf/sample_pdf_cpu.cpp
"""

from __future__ import annotations

import argparse
import json
import tempfile
from itertools import product
from pathlib import Path

import torch
from torch.utils.cpp_extension import load

from nerf_lab.sample_pdf import sample_pdf

BINDING = """
#include <torch/extension.h>
void SamplePdfCpu(const torch::Tensor& bins, const torch::Tensor& weights,
                  const torch::Tensor& outputs, float eps);
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("sample_pdf_cpu", &SamplePdfCpu); }
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cpp", type=Path, help="PyTorch3D's sample_pdf_cpu.cpp")
    args = parser.parse_args()
    build = Path(tempfile.mkdtemp(prefix="p3d_sample_pdf_"))
    (build / "binding.cpp").write_text(BINDING)
    ext = load(
        name="p3d_sample_pdf",
        sources=[str(args.cpp.resolve()), str(build / "binding.cpp")],
        build_directory=str(build),
        verbose=False,
    )

    def pytorch3d_sample_pdf(bins, weights, n_samples, det=False, eps=1e-5):
        shape = (*bins.shape[:-1], n_samples)
        if det:
            out = torch.linspace(0.0, 1.0, n_samples).expand(shape).contiguous()
        else:
            out = torch.rand(shape)
        n_bins = weights.shape[-1]
        ext.sample_pdf_cpu(
            bins.reshape(-1, n_bins + 1), weights.reshape(-1, n_bins), out.reshape(-1, n_samples),
            eps,
        )  # fmt: skip
        return out

    torch.manual_seed(0)
    cases = compared = differ = 0
    max_diff = 0.0
    for n_bins, n_samples, batch, zeros, det, eps in product(
        [1, 7, 20, 64], [1, 2, 33, 128], [(), (1, 4), (31,), (257,)], [0.0, 0.5, 1.0],
        [True, False], [1e-5, 1e-2],
    ):  # fmt: skip
        weights = torch.rand(batch + (n_bins,))
        weights[torch.rand(weights.shape) < zeros] = 0.0
        bins = torch.cumsum(torch.rand(batch + (n_bins + 1,)), dim=-1)
        torch.manual_seed(cases)
        ours = sample_pdf(bins, weights, n_samples, det=det, eps=eps)
        torch.manual_seed(cases)
        theirs = pytorch3d_sample_pdf(bins, weights, n_samples, det=det, eps=eps)
        cases += 1
        compared += ours.numel()
        differ += int((ours != theirs).sum())
        max_diff = max(max_diff, float((ours - theirs).abs().max()) if ours.numel() else 0.0)
    print(json.dumps({"cases": cases, "samples": compared, "differ": differ,
                      "max_abs_diff": max_diff}))  # fmt: skip


if __name__ == "__main__":
    main()
