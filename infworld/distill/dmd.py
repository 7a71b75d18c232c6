"""Distribution matching distillation (DMD) for rectified flow: the generator loss and the critic loss.

DMD (Yin et al. 2024, "One-step Diffusion with Distribution Matching Distillation", eq. 7; DMD2,
Yin et al. 2024, Sec. 4.1) trains a few-step generator G so that its output distribution p_fake
matches the teacher's p_real. The gradient of KL(p_fake || p_real) with respect to a generated
sample x is, after noising x to x_t at a random level t,

    grad_x KL ~ (s_fake(x_t, t) - s_real(x_t, t))  ~  (x0_fake(x_t) - x0_real(x_t)) / weight

where the scores are expressed through each network's clean estimate x0 = x_t - t v (flow.py).
``x0_real`` comes from the frozen teacher (with action CFG), ``x0_fake`` from a "fake score"
network trained online on the generator's own samples (:func:`critic_loss`). As in DMD2 and the
public Self-Forcing code (Huang et al. 2025), the difference is divided by the mean absolute
distance |x - x0_real| per sample (a scale-free step), and the loss is written as a regression of
x onto the stop-gradient target x - grad, whose gradient with respect to x is exactly ``grad``:

    L_DMD = 1/2 || x - sg(x - grad) ||^2 / numel.
"""

from __future__ import annotations

import torch

from infworld.diffusion.flow import add_noise, expand_t, velocity_target


def dmd_gradient(x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor, eps: float = 1e-6
                 ) -> torch.Tensor:
    """The DMD direction for samples ``x`` (B, ...): (x0_fake - x0_real) / mean|x - x0_real| per sample.

    Descending it moves x toward the teacher's clean estimate and away from the fake one's.
    """
    dims = tuple(range(1, x.dim()))
    weight = (x.detach() - x0_real).abs().mean(dim=dims, keepdim=True).clamp(min=eps)  # (B, 1, ...)
    return (x0_fake - x0_real) / weight


def dmd_loss(x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor, sign: float = 1.0
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """The generator loss whose gradient with respect to ``x`` is ``sign * dmd_gradient / numel``.

    ``x`` carries the generator's graph; ``x0_real``/``x0_fake`` must not (computed under no_grad).
    ``sign = -1`` flips the update (a test that the direction is not accidental).
    """
    grad = torch.nan_to_num(dmd_gradient(x, x0_real, x0_fake)).detach()
    target = (x - sign * grad).detach()
    loss = 0.5 * (x.float() - target.float()).pow(2).mean()
    return loss, {"dmd_grad_norm": float(grad.float().pow(2).mean().sqrt())}


def critic_loss(v_fake: torch.Tensor, x: torch.Tensor, eps: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """Flow-matching loss of the fake score on generated samples: ||v_fake - (eps - x)||^2.

    ``v_fake`` (B, F, ...) is the fake network's velocity at x_t = (1 - t) x + t eps with ``x`` the
    detached generator output; ``mask`` (B, F) selects the frames that carry loss (the generated
    ones, not the clean context).
    """
    err = (v_fake.float() - velocity_target(x, eps).float()).pow(2)
    err = err.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else err  # (B, F)
    if mask is None:
        return err.mean()
    w = mask.float()
    return (err * w).sum() / w.sum().clamp(min=1.0)


def noised(x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, eps): ``x`` (B, F, ...) noised to the per-frame levels ``t`` (B, F) with fresh noise."""
    gen_dev = generator.device if generator is not None else x.device
    eps = torch.randn(x.shape, generator=generator, device=gen_dev, dtype=x.dtype).to(x.device)
    return add_noise(x, eps, t), eps


def x0_of(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Clean estimate x0 = x_t - t v with a per-frame ``t`` (B, F)."""
    return x_t - expand_t(t, x_t) * v
