"""Chain health: the flag a sampling step raises for a chain that blew up, and the error it becomes.

After each step a chain is flagged whose minibatch loss is non-finite or exceeds
L_n(w*) + ``max_loss_increase``, or whose weights are non-finite, recording the first bad step
and the norms of the gradient, localization and noise displacements (computed on the step that
failed: always on accelerators, where the check stays on the device, and only when a flag is
raised on the CPU, where reading it costs nothing). The flag is read on the host every
``health_every`` steps and a :class:`~spectro.nn.chains.DivergenceError` is raised for the
earliest failure.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .chains import DivergenceError, _LoopState

__all__ = ["flag_unhealthy", "raise_if_diverged"]

_TERM_NAMES = ("gradient", "localization", "noise")


def flag_unhealthy(state: _LoopState, loss: torch.Tensor, w_new: torch.Tensor, max_loss_increase: float,
                   always: bool, norms: Callable[[], torch.Tensor]) -> None:
    """Record in ``state`` the chains this step made unhealthy (``loss`` [C] at the weights before
    the step, ``w_new`` [C, D] after it). ``norms()`` [C, 3]: the step's displacement norms
    (:data:`_TERM_NAMES`), computed only when ``always`` or when a chain is flagged."""
    threshold = state.init_loss + max_loss_increase
    bad = ~torch.isfinite(loss) | (loss > threshold) | ~torch.isfinite(w_new.sum(-1))
    if always or bool(bad.any()):
        terms = norms()
        bad = bad | ~torch.isfinite(terms).all(-1)
        new = bad & (state.first_bad < 0)
        state.first_bad = torch.where(new, torch.full_like(state.first_bad, state.step), state.first_bad)
        state.bad_info = torch.where(new[:, None], torch.cat([loss[:, None], terms], dim=1), state.bad_info)


def raise_if_diverged(state: _LoopState, chain_offset: int) -> None:
    """Raise :class:`DivergenceError` for the earliest chain flagged so far (global index: + ``chain_offset``)."""
    fb = state.first_bad.cpu()
    if not (fb >= 0).any():
        return
    steps = torch.where(fb >= 0, fb, torch.iinfo(torch.long).max)
    c = int(torch.argmin(steps))
    info = state.bad_info[c].double().cpu().tolist()
    norms = dict(zip(_TERM_NAMES, info[1:]))
    nonfinite = [k for k, val in norms.items() if not np.isfinite(val)]
    culprit = nonfinite[0] if nonfinite else max(norms, key=lambda k: norms[k])
    raise DivergenceError(chain_offset + c, int(fb[c]), info[0], state.init_loss, norms, culprit)
