"""The SGLD / RMSProp-SGLD kernels (spectro.nn.samplers) against devinterp's SGMCMC optimizer, step for step.

devinterp's ``SGMCMC.step`` draws its noise per parameter, in parameter order, with
``torch.normal(mean=0.0, std=noise_level, size=p.shape, generator=noise_generator)``. We pass it a
seeded generator and draw our noise with the identical call from an identically seeded generator,
so both sides see the same η. Gradients are set by hand (a state-dependent function of w), so the
comparison isolates the update rule.
"""

import warnings

import pytest
import torch
from devinterp.optim import SGMCMC

from spectro.nn import samplers
from spectro.nn.config import SamplerConfig
from spectro.nn.posterior import LocalizedPosterior
from spectro.nn.restrictions import Restriction
from toy_regression import TwoLayer, mse

SHAPES = [(3, 4), (4,), (2, 2, 3)]


def _fake_grad(w: torch.Tensor, t: int) -> torch.Tensor:
    return torch.sin(3.0 * w + t) + 0.1 * w**2


def _devinterp_opt(method, params, *, lr, gamma, nbeta, masks=None):
    groups = [{"params": [p], "mask": (m if masks is not None else None)} for p, m in zip(params, masks or [None] * len(params))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "sgld":
            return SGMCMC.sgld(groups, lr=lr, localization=gamma, nbeta=nbeta)
        return SGMCMC.rmsprop_sgld(groups, lr=lr, localization=gamma, nbeta=nbeta, alpha=0.99, eps=0.1)


@pytest.mark.parametrize("method", ["sgld", "rmsprop_sgld"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("masked", [False, True])
def test_kernels_match_devinterp_step_for_step(method, dtype, masked):
    torch.manual_seed(0)
    lr, gamma, nbeta, steps = 1e-2, 30.0, 25.0, 12
    w0 = [torch.randn(s, dtype=dtype) for s in SHAPES]
    masks = [(torch.rand(s) > 0.4) for s in SHAPES] if masked else None
    params = [torch.nn.Parameter(w.clone()) for w in w0]
    opt = _devinterp_opt(method, params, lr=lr, gamma=gamma, nbeta=nbeta, masks=masks)

    # the registered method's pure kernel, one [1, numel] state per parameter tensor
    kernel = samplers.get(method)
    values = {"rmsprop_alpha": 0.99, "rmsprop_delta": 0.1}
    hypers = [kernel.make_hyper(samplers.Potential(w.reshape(1, -1), None if masks is None else masks[i].reshape(1, -1),
                                                   nbeta, gamma), lr, values, 0) for i, w in enumerate(w0)]
    states = [kernel.init(w.reshape(1, -1).clone(), h) for w, h in zip(w0, hypers)]
    g_dev, g_ours = torch.Generator().manual_seed(123), torch.Generator().manual_seed(123)
    for t in range(steps):
        for p in params:
            p.grad = _fake_grad(p.data, t)
        opt.step(noise_generator=g_dev)
        for i, st in enumerate(states):
            w = st.w.reshape(w0[i].shape)
            eta = torch.normal(mean=0.0, std=1.0, size=w.size(), generator=g_ours)
            states[i] = kernel.step(st, _fake_grad(w, t).reshape(1, -1), eta.reshape(1, -1), hypers[i])
        ours = [st.w.reshape(w.shape) for st, w in zip(states, w0)]
        for p, w in zip(params, ours):
            tol = dict(rtol=2e-6, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(w, p.data, **tol, msg=lambda s: f"step {t}: {s}")
    if masked:  # masked-out coordinates never move
        for p, w, m in zip(params, w0, masks):
            assert torch.equal(p.data[~m], w[~m])


def test_sgld_kernel_is_bitwise_devinterp():
    """Plain SGLD uses the same floating-point operations in the same order: bitwise equal."""
    torch.manual_seed(1)
    w0 = torch.randn(50)
    p = torch.nn.Parameter(w0.clone())
    opt = _devinterp_opt("sgld", [p], lr=1e-3, gamma=10.0, nbeta=7.0)
    w = w0.clone()
    gd, go = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for t in range(20):
        p.grad = _fake_grad(p.data, t)
        opt.step(noise_generator=gd)
        eta = torch.normal(mean=0.0, std=1.0, size=w.size(), generator=go)
        hyper = samplers.sgld.Hyper(samplers.Potential(w0, None, 7.0, 10.0), 1e-3)
        w = samplers.sgld.step(samplers.sgld.State(w), _fake_grad(w, t), eta, hyper).w
    assert torch.equal(w, p.data)


@pytest.mark.parametrize("method", ["sgld", "rmsprop_sgld"])
def test_posterior_sampler_matches_devinterp_optimizer(method, monkeypatch):
    """End to end: LocalizedPosterior (one chain, full batch, head-of-`a` restriction) against
    devinterp's SGMCMC driven by loss.backward() on the same model, with the same noise."""
    torch.manual_seed(2)
    model = TwoLayer().double()
    X, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    mask = torch.zeros(5, 3, dtype=torch.bool)
    mask[1:3] = True
    restriction = Restriction({"a.weight": mask, "b.weight": None})
    cfg = SamplerConfig(method=method, epsilon=1e-3, gamma=50.0, nbeta=12.0, chains=1, draws=8, batch_size=None, master_dtype=torch.float64)
    post = LocalizedPosterior(model, mse, (X, y), cfg, restriction)

    # Record our noise, then replay it into devinterp's torch.normal calls (parameter order).
    noises = []
    original_normal_ = torch.Tensor.normal_

    def recording_normal_(self, *args, **kwargs):
        out = original_normal_(self, *args, **kwargs)
        noises.append(out.clone())
        return out

    monkeypatch.setattr(torch.Tensor, "normal_", recording_normal_)
    traj = []
    post.sample(on_draw=lambda d: traj.append(d.weights[0].clone()))
    monkeypatch.undo()
    assert len(noises) == cfg.total_steps

    ref = TwoLayer().double()
    ref.load_state_dict(model.state_dict())
    pa, pb = ref.a.weight, ref.b.weight
    for p in ref.parameters():
        p.requires_grad_(False)
    pa.requires_grad_(True)
    pb.requires_grad_(True)
    opt = _devinterp_opt(method, [pa, pb], lr=1e-3, gamma=50.0, nbeta=12.0, masks=[mask, None])
    sizes = [pa.numel(), pb.numel()]
    for t in range(cfg.total_steps):
        queue = [e.view(p.shape) for e, p in zip(torch.split(noises[t], sizes), (pa, pb))]

        def fake_normal(*args, size, **kwargs):
            eta = queue.pop(0)
            assert tuple(eta.shape) == tuple(size)
            return eta

        opt.zero_grad()
        mse(ref(X), (X, y)).mean().backward()
        monkeypatch.setattr(torch, "normal", fake_normal)
        opt.step()
        monkeypatch.undo()
        flat = torch.cat([pa.detach().reshape(-1), pb.detach().reshape(-1)])
        torch.testing.assert_close(traj[t], flat, rtol=1e-12, atol=1e-12)
