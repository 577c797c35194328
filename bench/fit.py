"""Ladder fit: revdistill vs the reference implementation's way, in the same run.

The reference way (the authors' code): per step, numpy SVD of the centred input, scikit-learn
LinearRegression on the Johnstone-selected principal components, then scikit-learn IncrementalPCA
of the residual. Ours: one streaming pass of joint float64 moments, then small eigen-problems.
Both are run along the same nested path, so their outputs are comparable; the table shows both
times, the ratio and the largest difference of the outputs (columns sign-aligned, since PCA axes
are defined up to sign).

    python bench/fit.py                                  # CPU: 200k residues, 320 -> 480 -> 640
    python bench/fit.py --device cuda --n-residues 1000000 --dims 2560,5120 --skip-reference

On CUDA the synthetic levels are drawn on the GPU (1M x (2560 + 5120) floats: 31 GB there).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from revdistill import DistillationLadder, Moments  # noqa: E402


def synthetic_levels(n_residues: int, dims: list[int], seed: int = 0, device: str = "cpu",
                     generate_on_device: bool = False) -> dict:
    """Per-residue levels with real correlation structure: a shared low-rank latent space with a
    decaying spectrum seen through each model, level-specific directions, noise and offsets.

    ``generate_on_device``: draw the numbers on ``device`` itself (a GPU makes 1M x 7680 values in
    well under a second; the CPU needs minutes and 3x the memory). Numbers then depend on the device.
    """
    generate = torch.device(device) if generate_on_device else torch.device("cpu")
    generator = torch.Generator(device=generate).manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, device=generate)

    latent_dim = max(dims) // 4
    shared = randn(n_residues, latent_dim) * torch.linspace(3.0, 0.1, latent_dim, device=generate)
    levels = {}
    for index, dim in enumerate(dims):
        mixing = randn(latent_dim, dim) / latent_dim ** 0.5
        values = shared @ mixing  # in place below: 1M x 5120 on a GPU peaks at ~55 GB, not ~75
        values += randn(n_residues, dim // 8) @ (randn(dim // 8, dim) / dim ** 0.5)
        values.add_(randn(n_residues, dim), alpha=0.2)
        values += randn(dim)
        levels[f"L{index}:{dim}"] = values.to(device=device, dtype=torch.float32)
    return levels


def fit_from_moments(levels: dict, device: str, chunk_size: int = 16384, precision: str = "float64"):
    """Time the whole-ladder fit: one pass of joint moments on ``device``, then the eigen-problems there.

    Returns
    -------
    seconds : float
        Wall time of ``Moments(...).update(levels)`` + ``DistillationLadder.fit_moments``, device-synchronised.
    moments_seconds : float
        The part spent on the moments.
    ladder : DistillationLadder
    """
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    dims = [int(values.shape[1]) for values in levels.values()]
    sync()
    start = time.perf_counter()
    moments = Moments(list(levels), dims, device=device, chunk_size=chunk_size, precision=precision).update(levels)
    sync()
    moments_seconds = time.perf_counter() - start
    ladder = DistillationLadder(regressor="pcr").fit_moments(moments)
    sync()
    return time.perf_counter() - start, moments_seconds, ladder


def reference_ladder(levels: dict) -> np.ndarray:
    """The reference implementation's way, along the nested path; returns the nested output."""
    from sklearn.decomposition import IncrementalPCA
    from sklearn.linear_model import LinearRegression

    names = list(levels)
    nested = levels[names[0]].cpu().numpy()
    for name in names[1:]:
        large = levels[name].cpu().numpy()
        n, d_small = nested.shape
        x_mean, y_mean = nested.mean(0), large.mean(0)
        _, singular, vt = np.linalg.svd(nested - x_mean, full_matrices=False)
        eig = singular ** 2 / (n - 1)
        edge = (1 + np.sqrt(d_small / n)) ** 2
        noise = eig[eig / eig.mean() < edge]
        sigma2 = np.median(noise) if noise.size else np.median(eig[-max(1, d_small // 4):])
        k = max(int(np.sum(eig > sigma2 * edge)), 1)
        axes = vt[:k].T
        regression = LinearRegression().fit((nested - x_mean) @ axes, large - y_mean)
        residual = large - (regression.predict((nested - x_mean) @ axes) + y_mean)
        pca = IncrementalPCA(n_components=large.shape[1] - d_small, batch_size=131072)
        for start in range(0, n, 131072):
            pca.partial_fit(residual[start:start + 131072])
        nested = np.concatenate([nested, pca.transform(residual)], axis=1)
    return nested


def exact_ladder(levels: dict) -> np.ndarray:
    """Ground truth: the same method in float64 from full SVDs of the in-memory data (no streaming,
    no randomisation, no truncated incremental updates), signs fixed like ours."""
    names = list(levels)
    nested = levels[names[0]].cpu().numpy().astype(np.float64)
    for name in names[1:]:
        large = levels[name].cpu().numpy().astype(np.float64)
        n, d_small = nested.shape
        xs, ys = nested - nested.mean(0), large - large.mean(0)
        _, singular, vt = np.linalg.svd(xs, full_matrices=False)
        eig = singular ** 2 / (n - 1)
        edge = (1 + np.sqrt(d_small / n)) ** 2
        noise = eig[eig / eig.mean() < edge]
        sigma2 = np.median(noise) if noise.size else np.median(eig[-max(1, d_small // 4):])
        scores = xs @ vt[: max(int(np.sum(eig > sigma2 * edge)), 1)].T
        beta, *_ = np.linalg.lstsq(scores, ys, rcond=None)
        residual = ys - scores @ beta
        _, _, rvt = np.linalg.svd(residual - residual.mean(0), full_matrices=False)
        axes = rvt[: large.shape[1] - d_small]
        axes *= np.sign(axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)])[:, None]
        nested = np.concatenate([nested, residual @ axes.T], axis=1)
    return nested


def sign_aligned_max_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    signs = np.sign(np.sum(ours * theirs, axis=0))
    signs[signs == 0] = 1
    return float(np.max(np.abs(ours - theirs * signs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-residues", type=int, default=200_000)
    parser.add_argument("--dims", default="320,480,640", help="comma-separated level dims, small to large")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk-size", type=int, default=16384)
    parser.add_argument("--skip-reference", action="store_true", help="time ours only (e.g. 1M x 2560->5120 on a GPU)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--precisions", default="float64,float32",
                        help="Moments precisions to time, comma-separated (float64 is exact)")
    args = parser.parse_args()
    dims = [int(d) for d in args.dims.split(",")]
    levels = synthetic_levels(args.n_residues, dims, device=args.device,
                              generate_on_device=args.device.startswith("cuda"))

    print(f"device={args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}), "
          f"threads={torch.get_num_threads()}, residues={args.n_residues:,}, dims={dims}")
    ladders, rows = {}, []
    for precision in args.precisions.split(","):
        times = []
        for _ in range(args.repeats):
            seconds, _, ladders[precision] = fit_from_moments(levels, args.device, args.chunk_size, precision)
            times.append(seconds)
        rows.append((f"revdistill, {precision} moments + eigh", min(times), precision))
    ladder = ladders[rows[0][2]]
    outputs = {}
    if not args.skip_reference:
        start = time.perf_counter()
        outputs["reference"] = reference_ladder(levels)
        rows.append(("reference way (SVD + LinearRegression + IncrementalPCA)", time.perf_counter() - start,
                     "reference"))
        as_numpy = {k: v.cpu().numpy().astype(np.float64) for k, v in levels.items()}
        outputs.update({precision: ladders[precision].transform(as_numpy).values for precision in ladders})
        exact = exact_ladder(levels)
        scale = float(np.max(np.abs(exact)))
    reference_time = rows[-1][1] if not args.skip_reference else None
    print("\n| method | fit time (s) | residues/s | speed-up vs reference | max abs diff vs exact "
          "in-memory SVD (relative) |")
    print("|---|---|---|---|---|")
    for name, seconds, key in rows:
        speedup = f"{reference_time / seconds:.1f}x" if reference_time else "-"
        diff_text = "-"
        if outputs:
            diff = sign_aligned_max_difference(outputs[key], exact)
            diff_text = f"{diff:.2g} ({diff / scale:.1g})"
        print(f"| {name} | {seconds:.2f} | {args.n_residues / seconds:,.0f} | {speedup} | {diff_text} |")
    if outputs:
        print("\n'exact' is the same method computed from full float64 SVDs of all residues in memory; "
              "the reference's IncrementalPCA keeps only the top components between batches, so it is "
              "approximate when there is more than one batch.")
    for row in ladder.diagnostics():
        print(f"step {row['small']} -> {row['large']}: R2={row['r2']:.3f}, PCR components "
              f"{row['n_regression_components']}/{row['d_small']}, residual variance kept "
              f"{row['residual_explained_variance_ratio']:.3f}")


if __name__ == "__main__":
    main()
