"""Lightning modules, data modules and callbacks that train the networks of ``seglab.models``."""
