"""The fraud-scoring example: synthetic data (data.py) and training (train.py)."""
