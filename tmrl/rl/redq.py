"""REDQ-SAC (Chen et al. 2021): N critics, the target takes the minimum over a random subset of M of them, and the
policy is updated once every G critic updates (a high update-to-data ratio without over-estimation).

One call of ``REDQ.update`` consumes one minibatch and makes one critic update (so the trainer's throttling counts
critic updates, as TMRL does); every G-th call also updates the actor and the entropy coefficient. Networks,
optimisers and checkpoint state are SAC's with N critics.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tmrl.rl.config import AlgorithmConfig, ModelConfig
from tmrl.rl.memory import Minibatch
from tmrl.rl.sac import SAC
from tmrl.spaces import ObservationSpec


class REDQ(SAC):
    """SAC's networks with ``redq_n`` critics and REDQ's update."""

    def __init__(
        self, spec: ObservationSpec, algo: AlgorithmConfig, model: ModelConfig, device: torch.device
    ) -> None:
        super().__init__(spec, algo, model, device, n_critics=algo.redq_n)
        self._last_actor: dict[str, Tensor] = {}

    def update(self, b: Minibatch) -> dict[str, Tensor]:
        """One critic update on ``b``; every ``redq_g``-th call also the actor and alpha."""
        alpha = self.alpha
        n, m = self.algo.redq_n, self.algo.redq_m

        # 1. Target: minimum over a random subset of M target critics, under no_grad.
        with torch.no_grad():
            next_action, next_logp = self.actor(b.next_obs)
            subset = torch.randperm(n, device=self.device)[:m]
            next_q = self.critic_target(b.next_obs, next_action, subset).min(dim=0).values
            target = self._soft_target(b, next_q, next_logp, alpha)

        # 2. Critic loss: every one of the N critics regresses on the same target.
        features = self.critic.features(b.obs)
        q = self.critic.head(features, b.action)  # (N, B)
        critic_loss = (q - target).pow(2).mean()  # mean over critics and samples, as TMRL
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self._polyak()
        self.updates += 1

        # 3. Every G critic updates: the actor maximises the MEAN of the N critics minus alpha log pi.
        if self.updates % self.algo.redq_g == 0:
            action, logp = self.actor(b.obs)
            q_pi = self.critic.head(features.detach(), action).mean(dim=0)
            actor_loss = (alpha * logp - q_pi).mean()
            smooth = self._smoothness(b)
            self.actor_opt.zero_grad(set_to_none=True)
            (actor_loss if smooth is None else actor_loss + smooth).backward(inputs=self._actor_params)
            self.actor_opt.step()
            self._average_actor()
            # 4. Entropy coefficient, with the actor.
            alpha_loss = self._alpha_step(logp)
            self._last_actor = {
                "losses/actor": actor_loss.detach(),
                "losses/alpha": alpha_loss,
                "charts/entropy": -logp.detach().mean(),
            }
            if smooth is not None:
                self._last_actor["losses/smooth"] = smooth.detach()
        return {
            "losses/critic": critic_loss.detach(),
            "charts/alpha": alpha,
            "charts/q": q.detach().mean(),
            **self._last_actor,
        }
