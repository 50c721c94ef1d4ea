"""Stand-ins for the Ray calls a RayFed driver makes around fed.init.

xsilo needs no Ray cluster: ``ray.init(...)`` and ``ray.shutdown()`` do
nothing here, and ``ray.get`` of an :class:`ObjectRef` (a FedObject that
was nested in an argument, as a body sees it) gives its value, so a RayFed
program runs with its imports changed to::

    import xsilo as fed
    import xsilo.ray as ray
"""

from . import ObjectRef, get as _get

__all__ = ["init", "shutdown", "get", "ObjectRef"]


def init(*args, **kwargs):
    """Does nothing: xsilo runs no Ray cluster."""
    return None


def shutdown():
    """Does nothing: xsilo runs no Ray cluster."""
    return None


def get(refs):
    """The value of an ObjectRef (or the values of a list of them) in a
    body; a FedObject (or a list of them) as ``fed.get``."""
    return _get(refs)
