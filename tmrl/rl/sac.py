"""Soft actor-critic (Haarnoja et al. 2018) with twin critics, Polyak-averaged targets and optional entropy tuning.

The whole update is ``SAC.update``, read top to bottom: target under no_grad, critic loss, actor step, entropy
coefficient step, Polyak averaging. Time-limit truncation is not termination: only ``terminated`` stops the
bootstrap. REDQ (``tmrl/rl/redq.py``) reuses the networks and optimisers and replaces ``update``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor

from tmrl.rl.config import AlgorithmConfig, ModelConfig
from tmrl.rl.memory import Minibatch
from tmrl.rl.models import Actor, QEnsemble
from tmrl.spaces import ObservationSpec


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _adam(params, lr: float, betas: tuple[float, float], device: torch.device) -> torch.optim.Adam:
    # The fused kernel does the whole step in one pass over each tensor (CPU and CUDA).
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=device.type in ("cpu", "cuda"))


class SAC:
    """Networks, optimisers and the update step of SAC (``n_critics`` Q functions, 2 for SAC)."""

    def __init__(
        self,
        spec: ObservationSpec,
        algo: AlgorithmConfig,
        model: ModelConfig,
        device: torch.device,
        n_critics: int = 2,
    ) -> None:
        # gamma / alpha left at None: TMRL's per-step values (the trainer resolves them for the game's time step)
        algo = algo.at_time_step(1.0)
        assert algo.gamma is not None and algo.alpha is not None
        self.gamma = algo.gamma
        self.spec, self.algo, self.model_config, self.device = spec, algo, model, device
        self.actor = Actor(spec, model).to(device)
        self.critic = QEnsemble(spec, model, n_critics).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = _adam(self.actor.parameters(), algo.lr_actor, algo.betas, device)
        self.critic_opt = _adam(self.critic.parameters(), algo.lr_critic, algo.betas, device)
        self.log_alpha = torch.tensor(math.log(algo.alpha), device=device, requires_grad=algo.learn_entropy)
        self.alpha_opt = (
            _adam([self.log_alpha], algo.lr_entropy, algo.betas, device) if algo.learn_entropy else None
        )
        self.target_entropy = float(-spec.action_dim if algo.target_entropy is None else algo.target_entropy)
        self.updates = 0
        self._fixed_alpha = self.log_alpha.detach().exp()
        self._zero = torch.zeros((), device=device)
        self._actor_params: list[Tensor] = list(self.actor.parameters())
        self._critic_params: list[Tensor] = list(self.critic.parameters())
        self._target_params: list[Tensor] = list(self.critic_target.parameters())
        # algorithm.actor_average: the averaged actor (weight averaging, Nikishin et al. 2018), None when off
        self.actor_average = (
            copy.deepcopy(self.actor).requires_grad_(False) if algo.actor_average > 0.0 else None
        )
        self._average_params: list[Tensor] = (
            list(self.actor_average.parameters()) if self.actor_average is not None else []
        )

    @property
    def delivered_actor(self) -> Actor:
        """The actor a run delivers (test episodes, keep-the-best, the exported file): the average when
        ``algorithm.actor_average`` is on, else the live actor."""
        return self.actor if self.actor_average is None else self.actor_average

    def set_lr_scale(self, scale: float) -> None:
        """Set the actor's and the critics' learning rates to ``scale`` times the configured ones."""
        for opt, lr in ((self.actor_opt, self.algo.lr_actor), (self.critic_opt, self.algo.lr_critic)):
            for group in opt.param_groups:
                group["lr"] = lr * scale

    @property
    def alpha(self) -> Tensor:
        if self.alpha_opt is None:  # fixed: computed once
            return self._fixed_alpha
        return self.log_alpha.detach().exp()

    def update(self, b: Minibatch) -> dict[str, Tensor]:
        """One gradient step of the critics, the actor and alpha on minibatch ``b``; returns detached scalars."""
        alpha = self.alpha

        # 1. Soft Bellman target from the target critics, under no_grad.
        with torch.no_grad():
            next_action, next_logp = self.actor(b.next_obs)
            next_q = self.critic_target(b.next_obs, next_action).min(dim=0).values
            target = self._soft_target(b, next_q, next_logp, alpha)

        # 2. Critic loss: squared error of every critic against the same target.
        features = self.critic.features(b.obs)
        q = self.critic.head(features, b.action)  # (n_critics, B)
        critic_loss = (q - target).pow(2).mean()  # mean over critics and samples, as TMRL
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # 3. Actor: maximise min_i Q_i(s, a~pi) - alpha log pi(a|s); gradients reach the actor only. The critics'
        #    encoded observations of step 2 are reused, detached (identical for vector observations; for frames it
        #    saves one CNN pass, with the encoder as it was before the critic step).
        action, logp = self.actor(b.obs)
        q_pi = self.critic.head(features.detach(), action).min(dim=0).values
        actor_loss = (alpha * logp - q_pi).mean()
        smooth = self._smoothness(b)
        self.actor_opt.zero_grad(set_to_none=True)
        (actor_loss if smooth is None else actor_loss + smooth).backward(inputs=self._actor_params)
        self.actor_opt.step()
        self._average_actor()

        # 4. Entropy coefficient towards the target entropy.
        alpha_loss = self._alpha_step(logp)

        # 5. Polyak averaging of the target critics: target <- polyak * target + (1 - polyak) * critic.
        self._polyak()
        self.updates += 1
        out = {
            "losses/critic": critic_loss.detach(),
            "losses/actor": actor_loss.detach(),
            "losses/alpha": alpha_loss,
            "charts/alpha": alpha,
            "charts/q": q.detach().mean(),
            "charts/entropy": -logp.detach().mean(),
        }
        if smooth is not None:
            out["losses/smooth"] = smooth.detach()
        return out

    def _smoothness(self, b: Minibatch) -> Tensor | None:
        """CAPS penalties on the deterministic actor (None when both weights are 0): ``smooth_spatial`` times the
        mean squared action distance between each observation and a copy with Gaussian noise on its float
        components, plus ``smooth_temporal`` times the same between each observation and the next one. One
        batched forward pass covers all the observations involved."""
        lam_s, lam_t = self.algo.smooth_spatial, self.algo.smooth_temporal
        if lam_s == 0.0 and lam_t == 0.0:
            return None
        groups: list[dict[str, Tensor]] = [b.obs]
        if lam_s:
            sigma = self.algo.smooth_sigma
            groups.append(
                {k: v + sigma * torch.randn_like(v) if v.is_floating_point() else v for k, v in b.obs.items()}
            )
        if lam_t:
            groups.append(b.next_obs)
        stacked = {k: torch.cat([g[k] for g in groups]) for k in b.obs}
        actions = self.actor(stacked, deterministic=True)[0].chunk(len(groups))
        loss = self._zero
        rest = iter(actions[1:])
        if lam_s:
            loss = loss + lam_s * (actions[0] - next(rest)).pow(2).sum(-1).mean()
        if lam_t:
            loss = loss + lam_t * (actions[0] - next(rest)).pow(2).sum(-1).mean()
        return loss

    def _soft_target(self, b: Minibatch, next_q: Tensor, next_logp: Tensor, alpha: Tensor) -> Tensor:
        """Soft Bellman target; ``algorithm.step_penalty`` is taken off every reward, and only termination stops
        the bootstrap (truncated rows bootstrap). With n-step returns the reward is the discounted sum of m rewards
        and the bootstrap is discounted by ``b.discount`` = gamma^m (the configuration refuses a step penalty
        there)."""
        if b.discount is not None:
            return b.reward + b.discount * (1.0 - b.terminated) * (next_q - alpha * next_logp)
        reward = b.reward - self.algo.step_penalty if self.algo.step_penalty else b.reward
        return reward + self.gamma * (1.0 - b.terminated) * (next_q - alpha * next_logp)

    def _alpha_step(self, logp: Tensor) -> Tensor:
        if self.alpha_opt is None:
            return self._zero
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        return alpha_loss.detach()

    @torch.no_grad()
    def _polyak(self) -> None:
        torch._foreach_lerp_(self._target_params, self._critic_params, 1.0 - self.algo.polyak)

    @torch.no_grad()
    def _average_actor(self) -> None:
        if self.actor_average is not None:
            torch._foreach_lerp_(self._average_params, self._actor_params, 1.0 - self.algo.actor_average)

    # -- checkpoint state (tensors and plain containers only: loadable with torch.load(weights_only=True)) --
    def state_dict(self) -> dict:
        state = {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "updates": self.updates,
        }
        if self.alpha_opt is not None:
            state["alpha_opt"] = self.alpha_opt.state_dict()
        if self.actor_average is not None:
            state["actor_average"] = self.actor_average.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        if self.actor_average is not None:  # a checkpoint made without the average starts it at the actor
            self.actor_average.load_state_dict(state.get("actor_average", state["actor"]))
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self._fixed_alpha = self.log_alpha.detach().exp()
        if self.alpha_opt is not None:
            self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.updates = int(state["updates"])
