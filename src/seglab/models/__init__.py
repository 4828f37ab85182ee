"""Networks only: no training loop, no tracking (those live in ``seglab.training``)."""
