"""Online recommendation learners: pure objects with `learn_one`, `recommend`, `snapshot`."""

from models.reco.affinity import Affinity
from models.reco.base import Candidate, Recommender
from models.reco.cf import OnlineMF
from models.reco.cooccurrence import CO_BUY_TYPES, CO_VIEW_TYPES, CoOccurrence
from models.reco.ensemble import RecoModels
from models.reco.history import History
from models.reco.nextitem import NEXT_ITEM_TYPES, NextItem
from models.reco.repurchase import Decision, Repurchase
from models.reco.sessionknn import SessionKNN, score_sessions
from models.reco.trending import Trending

__all__ = [
    "CO_BUY_TYPES",
    "CO_VIEW_TYPES",
    "NEXT_ITEM_TYPES",
    "Affinity",
    "Candidate",
    "CoOccurrence",
    "Decision",
    "History",
    "NextItem",
    "OnlineMF",
    "RecoModels",
    "Recommender",
    "Repurchase",
    "SessionKNN",
    "Trending",
    "score_sessions",
]
