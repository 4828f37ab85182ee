"""Reports over trained models: figures (matplotlib ``Figure`` objects) and dicts of metric keys.

Evaluation sits above ``metrics`` and ``training`` and below ``tracking``: it computes and draws,
and the stage that called it decides what to log where.
"""
