"""Neighborhood clustering: the seed notebook's k-means segmentation as a package.

Importing the package is cheap on purpose: pandas, scikit-learn, matplotlib and the Google
clients load in the modules that need them, so a cold CLI run or function start pays only for
what it uses.
"""

__version__ = "0.1.0"


# The two kinds of failure the product tells apart.
#
# A permanent error (bad input, bad settings, a malformed event) will fail again on retry: the CLI
# exits 2 and the function acks the event. Anything transient (a 5xx, a timeout) is left to raise
# so the trigger's retry policy can try again.
class InputError(ValueError):
    """Bad input or settings: one line saying what is wrong, where, and how to fix it."""


def one_line(error: BaseException) -> str:
    """An error as one line: its message, or its type when it has none."""
    text = " ".join(str(error).split())
    return text or type(error).__name__
