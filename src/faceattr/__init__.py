"""faceattr: face attributes (gender, age, landmarks) with identity pretraining and multi-task learning.

The library behind the DVC stages in ``stages/``; nothing runs at import.
"""

__version__ = "0.1.0"
