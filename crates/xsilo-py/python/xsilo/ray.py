"""Stand-ins for the two Ray calls a RayFed driver makes around fed.init.

xsilo needs no Ray cluster: ``ray.init(...)`` and ``ray.shutdown()`` do
nothing here, so a RayFed program runs with its imports changed to::

    import xsilo as fed
    import xsilo.ray as ray
"""


def init(*args, **kwargs):
    """Does nothing: xsilo runs no Ray cluster."""
    return None


def shutdown():
    """Does nothing: xsilo runs no Ray cluster."""
    return None
