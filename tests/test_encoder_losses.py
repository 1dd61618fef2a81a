"""The two training objectives: the false-negative margin mask of stage 1 and ROAR's properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from epm_spark.errors import InputError
from epm_spark.models.encoder.losses import MaskedContrastiveLoss, RoarLoss, log_mean_exp


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def manual_infonce(sim_row, positive, keep, temperature):
    logits = [sim_row[j] / temperature for j in keep]
    pos = sim_row[positive] / temperature
    return -(pos - math.log(sum(math.exp(x) for x in logits)))


# ----------------------------------------------------------------------------- stage 1


def test_contrastive_is_plain_infonce_when_no_negative_is_near():
    anchors = unit([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    candidates = unit([0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.0, 0.2, 1.0])
    loss_fn = MaskedContrastiveLoss(temperature=0.5, margin=0.05)
    loss = loss_fn(anchors, candidates)
    sim = (anchors @ candidates.T).tolist()
    expected = (manual_infonce(sim[0], 0, [0, 1, 2], 0.5) + manual_infonce(sim[1], 1, [0, 1, 2], 0.5)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss_fn.last_masked_fraction == 0.0


def test_negative_within_margin_is_masked_not_punished():
    anchors = unit([1.0, 0.0])
    # candidate 1 is almost as similar to the anchor as the positive: a likely unlabelled duplicate.
    candidates = unit([0.95, 0.31], [0.94, 0.34], [0.0, 1.0]).requires_grad_(True)
    loss_fn = MaskedContrastiveLoss(temperature=0.5, margin=0.1)
    loss = loss_fn(anchors, candidates)
    sim = (anchors @ candidates.T)[0].tolist()
    assert loss.item() == pytest.approx(manual_infonce(sim, 0, [0, 2], 0.5), rel=1e-5)
    loss.backward()
    assert torch.all(candidates.grad[1] == 0), "a masked negative must get no gradient"
    assert candidates.grad[2].abs().sum() > 0
    assert loss_fn.last_masked_fraction == pytest.approx(0.5)
    # Without the margin the same negative is punished: the loss is higher.
    assert MaskedContrastiveLoss(0.5, margin=0.0)(anchors, candidates.detach()).item() > loss.item() + 0.1


def test_verified_negative_is_kept_unless_asked():
    anchors = unit([1.0, 0.0])
    candidates = unit([0.95, 0.31], [0.94, 0.34], [0.0, 1.0])
    verified = torch.tensor([[False, True, False]])
    kept = MaskedContrastiveLoss(0.5, 0.1)(anchors, candidates, verified=verified)
    sim = (anchors @ candidates.T)[0].tolist()
    assert kept.item() == pytest.approx(manual_infonce(sim, 0, [0, 1, 2], 0.5), rel=1e-5)
    masked = MaskedContrastiveLoss(0.5, 0.1, mask_verified=True)(anchors, candidates, verified=verified)
    assert masked.item() == pytest.approx(manual_infonce(sim, 0, [0, 2], 0.5), rel=1e-5)


def test_known_duplicate_is_masked_whatever_its_similarity():
    anchors = unit([1.0, 0.0])
    candidates = unit([0.9, 0.1], [0.0, 1.0], [-1.0, 0.2])
    duplicate = torch.tensor([[True, True, False]])  # also marks the positive: that must be ignored
    loss = MaskedContrastiveLoss(1.0, margin=0.0)(anchors, candidates, duplicate=duplicate)
    sim = (anchors @ candidates.T)[0].tolist()
    assert loss.item() == pytest.approx(manual_infonce(sim, 0, [0, 2], 1.0), rel=1e-5)


def test_positive_index_points_anywhere():
    anchors = unit([1.0, 0.0])
    candidates = unit([0.0, 1.0], [1.0, 0.1])
    loss = MaskedContrastiveLoss(1.0, 0.0)(anchors, candidates, torch.tensor([1]))
    sim = (anchors @ candidates.T)[0].tolist()
    assert loss.item() == pytest.approx(manual_infonce(sim, 1, [0, 1], 1.0), rel=1e-5)


def test_contrastive_rejects_bad_settings_and_shapes():
    with pytest.raises(InputError, match="temperature"):
        MaskedContrastiveLoss(temperature=0)
    with pytest.raises(InputError, match="margin"):
        MaskedContrastiveLoss(margin=-0.1)
    with pytest.raises(InputError, match="shape"):
        MaskedContrastiveLoss()(unit([1.0, 0.0]), unit([1.0, 0.0], [0.0, 1.0]), duplicate=torch.zeros(2, 2, dtype=torch.bool))


# ----------------------------------------------------------------------------- stage 2


def test_roar_reduces_to_bradley_terry_for_single_items():
    s_pos, s_neg, tau = 0.7, 0.4, 0.05
    scores = torch.tensor([[s_pos, s_neg]])
    grades = torch.tensor([[1, 0]])
    assert RoarLoss(temperature=tau)(scores, grades).item() == pytest.approx(
        -F.logsigmoid(torch.tensor((s_pos - s_neg) / tau)).item(), rel=1e-6)
    # Temperature 1 is the textbook form -log sigma(s_pos - s_neg).
    assert RoarLoss(temperature=1.0)(scores, grades).item() == pytest.approx(
        -math.log(1 / (1 + math.exp(-(s_pos - s_neg)))), rel=1e-6)
    # The margin asks for an odds ratio of e^delta: Bradley-Terry shifted by delta.
    assert RoarLoss(temperature=tau, margins=[2.0])(scores, grades).item() == pytest.approx(
        -F.logsigmoid(torch.tensor((s_pos - s_neg) / tau - 2.0)).item(), rel=1e-6)


def test_roar_chains_adjacent_grades_only():
    scores = torch.tensor([[0.9, 0.5, 0.1]])
    grades = torch.tensor([[2, 1, 0]])
    tau = 0.1
    expected = -(F.logsigmoid(torch.tensor((0.9 - 0.5) / tau)) + F.logsigmoid(torch.tensor((0.5 - 0.1) / tau)))
    assert RoarLoss(tau, margins=[0.0])(scores, grades).item() == pytest.approx(expected.item(), rel=1e-6)
    # One margin per adjacent pair, highest pair first.
    expected = -(F.logsigmoid(torch.tensor((0.9 - 0.5) / tau - 1.0)) + F.logsigmoid(torch.tensor((0.5 - 0.1) / tau - 3.0)))
    assert RoarLoss(tau, margins=[1.0, 3.0])(scores, grades).item() == pytest.approx(expected.item(), rel=1e-6)


def test_roar_does_not_depend_on_group_size_for_identical_items():
    loss = RoarLoss(temperature=0.05, margins=[0.5])
    single = loss(torch.tensor([[0.8, 0.3, 0.1]]), torch.tensor([[2, 1, 0]]))
    repeated = loss(torch.tensor([[0.8, 0.8, 0.8, 0.3, 0.3, 0.1, 0.1, 0.1, 0.1]]),
                    torch.tensor([[2, 2, 2, 1, 1, 0, 0, 0, 0]]))
    assert repeated.item() == pytest.approx(single.item(), rel=1e-6)


def test_roar_group_scores_bound_the_group():
    # The weakest match and the strongest negative decide: a bad match is not hidden by a good one.
    loss = RoarLoss(temperature=0.05)
    good = loss(torch.tensor([[0.9, 0.9, 0.2]]), torch.tensor([[1, 1, 0]]))
    one_bad_match = loss(torch.tensor([[0.9, 0.1, 0.2]]), torch.tensor([[1, 1, 0]]))
    assert one_bad_match.item() > good.item() + 1.0


def test_roar_gradient_orders_the_grades():
    scores = torch.full((1, 7), 0.5, requires_grad=True)
    grades = torch.tensor([[2, 1, 1, 1, 0, 0, -1]])  # groups of 1, 3 and 2 items, one padding slot
    RoarLoss(temperature=0.05, margins=[0.2])(scores, grades).backward()
    g = scores.grad[0]
    assert g[0] < 0, "descending the gradient must raise the top grade"
    assert torch.all(g[4:6] > 0), "and lower the bottom grade"
    assert torch.all((g[1:4] > g[0]) & (g[1:4] < g[4])), "with the middle grade in between"
    assert g[6] == 0, "padding gets no gradient"


def test_roar_descent_sorts_every_item_by_grade():
    torch.manual_seed(0)
    grades = torch.tensor([[2, 2, 1, 1, 1, 0, 0, 0, 0], [2, 1, 1, 0, 0, 0, -1, -1, -1]])
    scores = torch.randn(2, 9).mul(0.3).requires_grad_(True)
    loss_fn = RoarLoss(temperature=0.1, margins=[1.0])
    opt = torch.optim.SGD([scores], lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        loss_fn(scores, grades).backward()
        opt.step()
    for row, grade in zip(scores.detach(), grades):
        for hi in (2, 1):
            assert row[grade == hi].min() > row[grade == hi - 1].max()


def test_roar_single_grade_query_contributes_nothing():
    scores = torch.tensor([[0.3, 0.9]], requires_grad=True)
    loss = RoarLoss()(scores, torch.tensor([[1, 1]]))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(scores.grad == 0)


def test_roar_rejects_bad_input():
    with pytest.raises(InputError, match="margins"):
        RoarLoss(margins=[-1.0])
    with pytest.raises(InputError, match="shape"):
        RoarLoss()(torch.zeros(1, 3), torch.zeros(1, 2, dtype=torch.long))


def test_log_mean_exp_of_identical_values_is_the_value():
    x = torch.tensor([[2.0, 2.0, 2.0, 7.0]])
    mask = torch.tensor([[True, True, True, False]])
    assert log_mean_exp(x, mask).item() == pytest.approx(2.0)
