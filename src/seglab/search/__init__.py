"""Optuna searches over the NVAE's settings: storages, search space, objective, study runner.

Sits above ``tracking`` and below ``cli``; the ``seglab search nvae`` stage
(:mod:`seglab.stages.search`) supplies the data and the training run of each trial.
"""
