"""Loss terms on cases with known answers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from comfy_splice.backbone import Features, self_similarity
from comfy_splice.losses import AppearanceLoss, IdentityLoss, StructureLoss, self_similarity_mse


def _features(seed: int, tokens: int = 9, channels: int = 6) -> Features:
    gen = torch.Generator().manual_seed(seed)
    return Features(cls=torch.randn(1, channels, generator=gen),
                    keys=torch.randn(1, tokens, channels, generator=gen))


def test_identical_inputs_cost_nothing() -> None:
    f = _features(0)
    for term in (StructureLoss(), AppearanceLoss(), IdentityLoss()):
        assert term(f, f).item() == 0.0


def test_defaults_are_the_papers_weights() -> None:
    assert (StructureLoss().weight, AppearanceLoss().weight, IdentityLoss().weight) == (1.0, 10.0, 1.0)
    assert StructureLoss().layer == AppearanceLoss().layer == IdentityLoss().layer == -1


def test_appearance_is_the_mse_of_cls_tokens() -> None:
    a = Features(cls=torch.tensor([[1.0, 2.0]]), keys=torch.zeros(1, 1, 2))
    b = Features(cls=torch.tensor([[3.0, 4.0]]), keys=torch.zeros(1, 1, 2))
    assert AppearanceLoss()(a, b).item() == 4.0


def test_identity_is_the_mse_of_keys() -> None:
    a, b = _features(1), _features(2)
    torch.testing.assert_close(IdentityLoss()(a, b), F.mse_loss(a.keys, b.keys))


def test_structure_is_the_mse_of_self_similarities() -> None:
    a, b = _features(1), _features(2)
    expected = F.mse_loss(self_similarity(a.keys), self_similarity(b.keys))
    torch.testing.assert_close(StructureLoss()(a, b), expected)
    # structure ignores a per-token rescaling of the keys: cosine similarity
    scaled = Features(cls=a.cls, keys=a.keys * torch.rand(1, 9, 1).add(0.5))
    assert StructureLoss()(a, scaled).item() < 1e-10


def test_gram_form_equals_the_direct_form_for_many_tokens() -> None:
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 300, 16, generator=gen), torch.randn(2, 300, 16, generator=gen)
    direct = F.mse_loss(self_similarity(x), self_similarity(y))
    torch.testing.assert_close(self_similarity_mse(x, y), direct, rtol=1e-4, atol=1e-7)
    xg = x.clone().requires_grad_(True)
    xd = x.clone().requires_grad_(True)
    self_similarity_mse(xg, y).backward()
    F.mse_loss(self_similarity(xd), self_similarity(y)).backward()
    torch.testing.assert_close(xg.grad, xd.grad, rtol=1e-3, atol=1e-8)
