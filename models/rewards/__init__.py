"""Rewards for the learners: decisions joined to the reactions that followed them."""

from models.rewards.join import JoinState, LoggedDecision, Reaction, Reward, RewardJoin

__all__ = ["JoinState", "LoggedDecision", "Reaction", "Reward", "RewardJoin"]
