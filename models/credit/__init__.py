"""The credit-scoring example: the UCI German credit data (data.py) and training (train.py)."""
