"""Recommendations that change with every event: the library call (`LiveRecommender`), the person's bounded state
(`UserState`), where states are kept (`interestbert.inference.live.store`) and the HTTP service
(`interestbert.inference.live.service`, ``interestbert serve``)."""

from .recommender import Answer, LiveError, LiveRecommender, Update, card_histories
from .state import LiveEvent, UserState

__all__ = ["Answer", "LiveError", "LiveEvent", "LiveRecommender", "Update", "UserState", "card_histories"]
