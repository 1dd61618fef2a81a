"""Training objectives of the dual-encoder's two stages.

Seed: "Semantic Retrieval for Product Search in E-Commerce" (Siamese LLM dual-encoder):
stage 1 is contrastive learning with a false-negative margin mask, stage 2 is ROAR
(Relative Odds Alignment for Retrieval) over graded relevance groups. Both take
cosine similarities of unit vectors and a temperature; ``docs/encoder.md`` has the
formulas with a worked example.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from epm_spark.errors import InputError

__all__ = ["MaskedContrastiveLoss", "RoarLoss", "log_mean_exp"]


def log_mean_exp(x: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``log(mean(exp(x)))`` over the entries where ``mask`` is true; a group of n equal values gives that value."""
    x = x.masked_fill(~mask, float("-inf"))
    count = mask.sum(dim).clamp(min=1).to(x.dtype)
    return torch.logsumexp(x, dim) - torch.log(count)


class MaskedContrastiveLoss(torch.nn.Module):
    r"""InfoNCE over in-batch and hard negatives, with the false-negative margin mask.

    From "Semantic Retrieval for Product Search in E-Commerce" (Siamese LLM dual-encoder),
    stage 1. For anchor :math:`a_i` with positive :math:`p_i` and candidates :math:`c_j`
    (every positive of the batch plus every hard negative), with cosine similarities
    :math:`s_{ij} = \cos(a_i, c_j)` and temperature :math:`\tau`:

    .. math::

        \ell_i = -\log \frac{e^{s_{i p_i}/\tau}}{e^{s_{i p_i}/\tau} + \sum_{j \in N_i} e^{s_{ij}/\tau}}

        N_i = \{ j \ne p_i : \lnot \mathrm{dup}(i, j) \land
                 \lnot (\lnot \mathrm{verified}(i, j) \land s_{ij} > s_{i p_i} - m) \}

    A candidate that is a known duplicate of the anchor (a labelled match, the same
    ``cluster_id``, the same listing) is always masked out; an unverified candidate
    (in-batch or mined) whose similarity comes within the margin :math:`m` of the
    positive's is most likely an unlabelled duplicate and is masked out instead of
    punished. Verified negatives (labelled non-matches) stay, since they are the
    hardest true negatives there are; ``mask_verified=True`` masks them too. The mask is
    computed without gradient. The loss is the mean of :math:`\ell_i`.
    """

    def __init__(self, temperature: float = 0.05, margin: float = 0.1, mask_verified: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise InputError(f"temperature must be > 0, got {temperature}")
        if margin < 0:
            raise InputError(f"margin must be >= 0, got {margin}")
        self.temperature = temperature
        self.margin = margin
        self.mask_verified = mask_verified
        # Share of negatives masked in the last call, for training logs.
        self.last_masked_fraction = 0.0

    def negative_mask(self, similarity: torch.Tensor, positive_index: torch.Tensor,
                      duplicate: torch.Tensor | None = None, verified: torch.Tensor | None = None) -> torch.Tensor:
        """True where a candidate is masked out for an anchor (never the anchor's positive)."""
        rows = torch.arange(similarity.size(0), device=similarity.device)
        with torch.no_grad():
            positive = similarity[rows, positive_index].unsqueeze(1)
            near = similarity > positive - self.margin
            if verified is not None and not self.mask_verified:
                near &= ~verified
            masked = near if duplicate is None else near | duplicate
            masked[rows, positive_index] = False
        return masked

    def forward(self, anchors: torch.Tensor, candidates: torch.Tensor, positive_index: torch.Tensor | None = None,
                duplicate: torch.Tensor | None = None, verified: torch.Tensor | None = None) -> torch.Tensor:
        """``anchors`` (B, d) and ``candidates`` (N, d) unit vectors; candidate ``positive_index[i]`` is
        anchor i's positive (default: candidate i). ``duplicate`` and ``verified`` are (B, N) booleans."""
        if positive_index is None:
            positive_index = torch.arange(anchors.size(0), device=anchors.device)
        similarity = anchors @ candidates.T
        for name, m in (("duplicate", duplicate), ("verified", verified)):
            if m is not None and m.shape != similarity.shape:
                raise InputError(f"{name} mask has shape {tuple(m.shape)}, expected {tuple(similarity.shape)}")
        masked = self.negative_mask(similarity, positive_index, duplicate, verified)
        negatives = candidates.size(0) - 1
        self.last_masked_fraction = float(masked.sum()) / max(1, masked.size(0) * negatives)
        logits = (similarity / self.temperature).masked_fill(masked, float("-inf"))
        return F.cross_entropy(logits, positive_index)


class RoarLoss(torch.nn.Module):
    r"""ROAR, Relative Odds Alignment for Retrieval: Bradley-Terry over graded relevance groups.

    From "Semantic Retrieval for Product Search in E-Commerce" (Siamese LLM dual-encoder),
    stage 2. For a query, the candidates fall into groups :math:`G_1, \dots, G_K` of
    strictly decreasing grade (e.g. match > hard negative > random negative), each of any
    size. With item scores :math:`z = s/\tau` (cosine over temperature), every group gets a
    pessimistic and an optimistic score, both log-mean-exp and so invariant to repeating
    identical items:

    .. math::

        \underline{g}_k = -\log \frac{1}{|G_k|} \sum_{d \in G_k} e^{-z_d} \qquad
        \overline{g}_k = \log \frac{1}{|G_k|} \sum_{d \in G_k} e^{z_d}

    Each pair of adjacent grades is one Bradley-Terry comparison whose odds must exceed
    the odds ratio :math:`e^{\delta_k}` (the consecutive odds-ratio margin):

    .. math::

        L = \sum_{k=1}^{K-1} -\log \sigma\big(\underline{g}_k - \overline{g}_{k+1} - \delta_k\big)

    so the weakest item of a grade is pushed above the strongest of the grade below. With
    one item per group and :math:`\delta = 0` this is Bradley-Terry,
    :math:`-\log \sigma((s_{pos} - s_{neg})/\tau)`. Only the grades a query has count:
    adjacent means adjacent among the groups present, and :math:`\delta_k` is the
    ``margins`` entry of the k-th present pair (the last entry repeats). The loss is the
    mean over queries.
    """

    def __init__(self, temperature: float = 0.05, margins: Sequence[float] | float = 0.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise InputError(f"temperature must be > 0, got {temperature}")
        margins = [float(margins)] if isinstance(margins, (int, float)) else [float(m) for m in margins]
        if not margins or any(m < 0 for m in margins):
            raise InputError(f"margins must be a non-empty list of numbers >= 0, got {margins}")
        self.temperature = temperature
        self.margins = margins

    def margin(self, k: int) -> float:
        return self.margins[min(k, len(self.margins) - 1)]

    def query_loss(self, scores: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
        """One query: ``scores`` (M,) cosine similarities, ``grades`` (M,) ints, -1 for padding."""
        z = scores / self.temperature
        present = sorted({int(g) for g in grades.tolist() if g >= 0}, reverse=True)
        if len(present) < 2:
            return z.sum() * 0.0
        masks = torch.stack([grades == g for g in present])  # (K, M)
        pessimistic = -log_mean_exp(-z.unsqueeze(0).expand_as(masks), masks)
        optimistic = log_mean_exp(z.unsqueeze(0).expand_as(masks), masks)
        margins = torch.tensor([self.margin(k) for k in range(len(present) - 1)], dtype=z.dtype, device=z.device)
        return F.softplus(optimistic[1:] - pessimistic[:-1] + margins).sum()

    def forward(self, scores: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
        """``scores`` and ``grades`` of shape (Q, M): a row per query, padded with grade -1."""
        if scores.shape != grades.shape:
            raise InputError(f"scores {tuple(scores.shape)} and grades {tuple(grades.shape)} differ in shape")
        if scores.dim() == 1:
            scores, grades = scores.unsqueeze(0), grades.unsqueeze(0)
        return torch.stack([self.query_loss(s, g) for s, g in zip(scores, grades)]).mean()
