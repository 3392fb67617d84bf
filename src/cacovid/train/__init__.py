"""CaCoVID training (docs/method.md §4–§5): sampling, rewards, the clipped objective and the trainer."""

from cacovid.scoring import (
    TEXT_REWARDS,
    accuracy_reward,
    multiple_choice_reward,
    numeric_reward,
    parse_option_letter,
    rouge_l_f,
)
from cacovid.train.config import TrainConfig
from cacovid.train.objective import ADVANTAGES, Memory, group_advantages, policy_loss
from cacovid.train.rewards import REWARDS, dense_reward, rollout_reward
from cacovid.train.sampling import SAMPLERS, Rollouts, sample_rollouts
from cacovid.train.trainer import Trainer
from cacovid.train.update import PolicyUpdater
from cacovid.train.validation import blind_filter, validate_selector

__all__ = [
    "ADVANTAGES",
    "REWARDS",
    "SAMPLERS",
    "TEXT_REWARDS",
    "Memory",
    "PolicyUpdater",
    "Rollouts",
    "TrainConfig",
    "Trainer",
    "accuracy_reward",
    "blind_filter",
    "dense_reward",
    "group_advantages",
    "multiple_choice_reward",
    "numeric_reward",
    "parse_option_letter",
    "policy_loss",
    "rollout_reward",
    "rouge_l_f",
    "sample_rollouts",
    "validate_selector",
]
