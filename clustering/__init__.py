"""Neighborhood clustering: the seed notebook's k-means segmentation as a package.

Importing the package is cheap on purpose: pandas, scikit-learn, matplotlib and the Google
clients load in the modules that need them, so a cold CLI run or function start pays only for
what it uses.
"""

__version__ = "0.1.0"
