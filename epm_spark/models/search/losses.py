"""Training objectives of the multi-task ranker: one per-pair likelihood, one per-query ranking term.

Both read the heads' logits ``z_t`` for the signals ``t`` (click, cart, purchase) of a batch of
(query, listing) pairs, each pair shown ``n_i`` times with ``k_ti`` events of ``t``, and return
the weighted total with each task's own term (for the training log). ``docs/ranker.md`` has the
formulas with the measured effect of each.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

__all__ = ["ListNetLoss", "NormalisedBinomialLoss", "base_entropy", "event_log_probabilities"]


def base_entropy(rate: float) -> float:
    """Entropy (nats) of a Bernoulli with ``rate``: the loss of always predicting the base rate."""
    q = min(max(rate, 1e-7), 1 - 1e-7)
    return -(q * math.log(q) + (1 - q) * math.log(1 - q))


def event_log_probabilities(logits: Mapping[str, torch.Tensor], chain: bool) -> dict[str, torch.Tensor]:
    """``log p_t`` per impression: ``log s(z_t)`` for independent heads; under the conditional chain
    purchase c cart c click (ESMM: Ma, Zhao, Huang, Wang, Hu, Zhu, Gai, "Entire Space Multi-Task Model",
    SIGIR 2018, https://doi.org/10.1145/3209978.3210104) each step's head is conditional:
    ``p_cart = p_click s(z_cart)``, ``p_purchase = p_cart s(z_purchase)``."""
    out = {t: F.logsigmoid(z.float()) for t, z in logits.items()}
    if chain:
        out["cart"] = out["click"] + out["cart"]
        out["purchase"] = out["cart"] + out["purchase"]
    return out


class NormalisedBinomialLoss(torch.nn.Module):
    r"""The binomial likelihood of each task's events, per impression, over its base-rate entropy.

    Normalised cross-entropy from He, Pan, Jin, Xu, Liu, Xu, Shi, Atallah, Herbrich, Bowers and
    Quiñonero Candela, "Practical Lessons from Predicting Clicks on Ads at Facebook", ADKDD 2014,
    https://doi.org/10.1145/2648584.2648589: dividing by the entropy of the base rate puts a task
    whose events are rare (purchases) on the scale of a frequent one (clicks), so the sum is not
    drowned by the frequent task. With :math:`q_t` the task's base rate over the training set and
    weights :math:`w_t`:

    .. math::

        L_t = -\frac{\sum_i k_{ti} \log p_{ti} + (n_i - k_{ti}) \log(1 - p_{ti})}{\sum_i n_i}

        H_t = -[q_t \log q_t + (1 - q_t) \log(1 - q_t)]

        L = \sum_t w_t L_t / H_t

    ``forward`` returns :math:`L` and each :math:`L_t / H_t`. A task missing from ``weights``
    weighs 1.
    """

    def __init__(self, entropies: Mapping[str, float], weights: Mapping[str, float] | None = None,
                 chain: bool = False) -> None:
        super().__init__()
        self.entropies = dict(entropies)
        self.weights = dict(weights or {})
        self.chain = chain

    def forward(self, logits: Mapping[str, torch.Tensor], impressions: torch.Tensor,
                counts: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        n = impressions.float()
        total_n = n.sum().clamp(min=1.0)
        total = torch.zeros((), device=n.device)
        parts: dict[str, float] = {}
        for task, lp in event_log_probabilities(logits, self.chain).items():
            k = counts[task].float()
            log_not = (torch.log1p(-lp.exp().clamp(max=1 - 1e-6)) if self.chain
                       else F.logsigmoid(-logits[task].float()))
            normalised = -(k * lp + (n - k) * log_not).sum() / total_n / self.entropies[task]
            parts[task] = float(normalised.detach())
            total = total + self.weights.get(task, 1.0) * normalised
        return total, parts


class ListNetLoss(torch.nn.Module):
    r"""ListNet's top-one cross-entropy between each query's observed rates and its heads' scores.

    From Cao, Qin, Liu, Tsai and Li, "Learning to Rank: From Pairwise Approach to Listwise
    Approach", ICML 2007, https://doi.org/10.1145/1273496.1273513. Over the listings :math:`i` of a
    query :math:`g` (``groups``: one query index per row of the batch), the observed rates against
    the softmax of the head's log-probabilities, divided by :math:`\log |g|` (the loss of a uniform
    ranking) so that long and short lists weigh alike:

    .. math::

        y_{ti} = \frac{k_{ti} / n_i}{\sum_{j \in g} k_{tj} / n_j}

        LL_t = \mathrm{mean}_g \left[ -\sum_{i \in g} y_{ti} \log \mathrm{softmax}_g(\log p_t)_i / \log |g| \right]

        LL = \sum_t w_t LL_t

    A query of one listing, or without an event of :math:`t`, adds nothing to :math:`LL_t`; a task
    no query of the batch has an event of is left out of the parts.
    """

    def __init__(self, weights: Mapping[str, float] | None = None, chain: bool = False) -> None:
        super().__init__()
        self.weights = dict(weights or {})
        self.chain = chain

    def forward(self, logits: Mapping[str, torch.Tensor], impressions: torch.Tensor,
                counts: Mapping[str, torch.Tensor], groups: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        n = impressions.float().clamp(min=1.0)
        total = torch.zeros((), device=n.device)
        parts: dict[str, float] = {}
        members = [groups == g for g in torch.unique(groups)]
        for task, lp in event_log_probabilities(logits, self.chain).items():
            rate = counts[task].float() / n
            terms = []
            for m in members:
                size = int(m.sum())
                y = rate[m]
                if size < 2 or float(y.sum()) <= 0:
                    continue
                terms.append(-(y / y.sum() * torch.log_softmax(lp[m], dim=0)).sum() / math.log(size))
            if terms:
                value = torch.stack(terms).mean()
                parts[task] = float(value.detach())
                total = total + self.weights.get(task, 1.0) * value
        return total, parts
