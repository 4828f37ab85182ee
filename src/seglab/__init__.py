"""seglab."""
