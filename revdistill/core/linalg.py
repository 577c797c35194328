"""Deterministic float64 linear algebra shared by the estimators."""
from __future__ import annotations

import torch


def symmetric_eigh_descending(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of a symmetric matrix, eigenvalues descending, signs fixed.

    The sign of each eigenvector is chosen so that its entry of largest magnitude is positive
    (the convention of scikit-learn's ``svd_flip``), so the same matrix always gives the same bytes.

    Returns
    -------
    eigenvalues : torch.Tensor of shape (n,)
    eigenvectors : torch.Tensor of shape (n, n)
        Column ``i`` belongs to ``eigenvalues[i]``.
    """
    symmetric = (matrix + matrix.T) / 2
    values, vectors = torch.linalg.eigh(symmetric)
    values = values.flip(0)
    vectors = vectors.flip(1)
    return values, flip_signs(vectors)


def flip_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Make the largest-magnitude entry of every column positive."""
    if vectors.numel() == 0:
        return vectors
    rows = torch.argmax(vectors.abs(), dim=0)
    signs = torch.sign(vectors[rows, torch.arange(vectors.shape[1], device=vectors.device)])
    signs[signs == 0] = 1
    return vectors * signs


def johnstone_rank(eigenvalues: torch.Tensor, n_samples: int,
                   min_variance_explained: float = 0.95) -> tuple[int, float, float]:
    """Number of principal components above the Johnstone noise threshold.

    ``threshold = sigma2 * (1 + sqrt(p / n))**2`` where ``sigma2`` is the median of the eigenvalues
    whose ratio to the mean eigenvalue is below ``(1 + sqrt(p / n))**2`` (or of the smallest quarter
    if none is). If no eigenvalue passes, keep enough components for ``min_variance_explained``
    of the variance. This follows the reverse-distillation authors' rule.

    Parameters
    ----------
    eigenvalues : torch.Tensor of shape (p,)
        Covariance eigenvalues in descending order.
    n_samples : int
        Number of rows the covariance was estimated from.

    Returns
    -------
    rank, threshold, sigma2
    """
    n_features = eigenvalues.shape[0]
    edge = (1.0 + (n_features / n_samples) ** 0.5) ** 2
    mean = eigenvalues.mean()
    noise = eigenvalues[eigenvalues / mean < edge] if float(mean) > 0 else eigenvalues[:0]
    if noise.numel() > 0:
        sigma2 = float(torch.quantile(noise, 0.5))
    else:
        sigma2 = float(torch.quantile(eigenvalues[-max(1, n_features // 4):], 0.5))
    threshold = sigma2 * edge
    rank = int((eigenvalues > threshold).sum())
    if rank < 1:
        cumulative = torch.cumsum(eigenvalues, 0) / eigenvalues.sum()
        rank = min(int(torch.searchsorted(cumulative, torch.tensor(
            [min_variance_explained], dtype=cumulative.dtype, device=cumulative.device))[0]) + 1, n_features)
    return rank, threshold, sigma2


def pseudo_inverse_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Moore-Penrose inverse of a symmetric positive semi-definite matrix (numpy's rcond rule)."""
    values, vectors = symmetric_eigh_descending(matrix)
    cutoff = values[0].clamp(min=0) * matrix.shape[0] * torch.finfo(matrix.dtype).eps
    keep = values > cutoff
    kept = vectors[:, keep]
    return (kept / values[keep]) @ kept.T
