"""offrl: offline and offline-to-online RL for continuous control, with seeds as a tensor axis."""

__version__ = "0.1.0"


class OffrlError(Exception):
    """An error in what the user asked for: the message says what is wrong and how to fix it."""
