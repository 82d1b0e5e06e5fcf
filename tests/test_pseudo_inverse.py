"""RegularizerTrainingModel (algorithms/regularizer_training.py): the Trainer's model is the pseudo-inverse, its
parameters are the regulariser's; the regulariser losses' helpers (losses/pseudo_inverse.py)."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch

from deepinv_ext.algorithms import RegularizerTrainingModel
from deepinv_ext.losses.pseudo_inverse import regularizer_of
from deepinv_ext.physics import AstraCT
from deepinv_ext.priors import NETT


def test_forward_is_the_pseudo_inverse_without_graph():
    torch.manual_seed(0)
    physics = AstraCT(16, angles=12, backend="sparse", cache_dir=None)
    y = physics.A(torch.rand(2, 1, 16, 16)).requires_grad_(True)
    default = RegularizerTrainingModel(NETT(width=4, depth=1))
    fbp = RegularizerTrainingModel(NETT(width=4, depth=1), pseudo_inverse=lambda y, p: p.A_dagger(y, fbp=True))
    torch.testing.assert_close(default(y, physics), physics.A_dagger(y.detach()))
    torch.testing.assert_close(fbp(y, physics), physics.A_dagger(y.detach(), fbp=True))
    assert not default(y, physics).requires_grad and not fbp(y, physics).requires_grad
    assert not torch.allclose(default(y, physics), fbp(y, physics))


def test_parameters_and_state_are_the_regularizer():
    prior = NETT(width=4, depth=1)
    model = RegularizerTrainingModel(prior)
    assert {id(p) for p in model.parameters()} == {id(p) for p in prior.parameters()}
    assert set(model.state_dict()) == {f"regularizer.{k}" for k in prior.state_dict()}


def test_regularizer_of():
    prior, other = NETT(width=4, depth=1), NETT(width=4, depth=1)
    model = RegularizerTrainingModel(prior)
    assert regularizer_of(model, None, "L") is prior
    assert regularizer_of(model, other, "L") is other
    with pytest.raises(ValueError, match="MyLoss: pass regularizer"):
        regularizer_of(torch.nn.Identity(), None, "MyLoss")


def test_bad_input():
    with pytest.raises(TypeError, match="regularizer must be a torch.nn.Module"):
        RegularizerTrainingModel(dinv.optim.TVPrior().fn)
    with pytest.raises(TypeError, match="pseudo_inverse must be callable"):
        RegularizerTrainingModel(NETT(width=4, depth=1), pseudo_inverse=3)


def test_check_regularizer_and_check_pair():
    from deepinv_ext.losses.pseudo_inverse import check_pair, check_regularizer

    prior = NETT(width=2, depth=1)
    check_regularizer(prior, ("fn", "phi"))
    with pytest.raises(TypeError, match=r"critic must be a torch.nn.Module with the method\(s\) fn, missing"):
        check_regularizer(prior, ("fn", "missing"), "critic")
    x = torch.rand(1, 1, 8, 8)
    check_pair(x, x, prior)
    with pytest.raises(TypeError, match="x_net has dtype torch.float64"):
        check_pair(x, x.double(), prior)
    with pytest.raises(ValueError, match="same shape"):
        check_pair(x, x[..., :4], prior)


def test_the_model_is_one_class_under_every_public_path():
    import warnings

    import deepinv_ext.algorithms.regularizer_training as home

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from deepinv_ext.losses import RegularizerTrainingModel as from_losses
    assert home.RegularizerTrainingModel is RegularizerTrainingModel is from_losses


def test_old_module_path_of_the_model_resolves_with_a_deprecation_warning():
    import deepinv_ext.losses.pseudo_inverse as old

    with pytest.warns(DeprecationWarning, match=r"pseudo_inverse.RegularizerTrainingModel moved to deepinv_ext.algorithms"):
        assert old.RegularizerTrainingModel is RegularizerTrainingModel
    with pytest.raises(AttributeError, match="no attribute 'Missing'"):
        old.Missing  # noqa: B018
