"""Spectral regularisation (NVAE paper, sec. 3.2): ``sum_i sigma_max(W_i)`` over every conv.

Bounding each layer's largest singular value bounds how sharply the encoder output can change
with its input, which the paper found keeps the KL from blowing up. The largest singular value of
each conv weight, reshaped to ``[out, in * kh * kw]``, is estimated by power iteration whose
vectors ``u``, ``v`` are buffers: they persist between steps (and in checkpoints), so one
iteration per step tracks the slowly changing weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class SpectralRegularizer(nn.Module):
    """Power-iteration state for every ``nn.Conv2d`` of ``model`` (matched by module name).

    The regulariser does not hold the model (its weights would be registered twice); pass the
    same model to :meth:`forward`.
    """

    def __init__(self, model: nn.Module, iterations: int = 1) -> None:
        super().__init__()
        self.iterations = iterations
        self.names: list[str] = []
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                rows = module.weight.shape[0]
                cols = module.weight[0].numel()
                i = len(self.names)
                self.register_buffer(f"u{i}", F.normalize(torch.randn(rows), dim=0))
                self.register_buffer(f"v{i}", F.normalize(torch.randn(cols), dim=0))
                self.names.append(name)

    def forward(self, model: nn.Module) -> Tensor:
        """Sum of the estimated largest singular values; differentiable in the weights.

        Each call first advances every power iteration by ``iterations`` steps (in place, no
        gradient), then evaluates ``u^T W v`` with the updated vectors.
        """
        modules = dict(model.named_modules())
        total = torch.zeros((), device=next(model.parameters()).device)
        for i, name in enumerate(self.names):
            weight = modules[name].weight
            w = weight.reshape(weight.shape[0], -1)
            u: Tensor = getattr(self, f"u{i}")
            v: Tensor = getattr(self, f"v{i}")
            with torch.no_grad():
                wd = w.detach().float()
                for _ in range(self.iterations):
                    v.copy_(F.normalize(wd.t() @ u, dim=0))
                    u.copy_(F.normalize(wd @ v, dim=0))
            # clones: the graph must not see the next call's in-place updates
            total = total + u.clone() @ (w.float() @ v.clone())
        return total
