"""The study's stages: what each ``seglab`` pipeline command runs.

A stage loads its inputs, trains or builds through the lower layers, tracks itself through
``seglab.tracking`` and writes its outputs atomically. Stages sit just below ``cli``: they may
import every other layer, nothing but the CLI imports them.
"""
