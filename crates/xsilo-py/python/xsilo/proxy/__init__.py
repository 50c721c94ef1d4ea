"""RayFed's ``fed.proxy`` module paths (xsilo has no proxy actors; see
``barriers.ping_others``)."""
