"""ngym from Python: `from ngym.api import Gym` (see ngym/api/gym.py)."""

from ngym.api.gym import Gym, Outcome

__all__ = ["Gym", "Outcome"]
