"""hybridnb: hybrid batch training of multilingual dense retrievers, as reproducible notebooks.

Elmahdy, Lin, Ahmad (2024), arXiv:2408.10536. The library holds the logic; the notebooks stay thin.
"""

__version__ = "0.1.0"
