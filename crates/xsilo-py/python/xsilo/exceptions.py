"""RayFed's ``fed.exceptions``: the errors a federated job raises.

``FedRemoteError`` is raised when a task failed in another party (its
``src_party`` names that party); ``TaskError`` in the party where it failed
(its ``cause`` is the exception object the body raised).
"""

from . import FedRemoteError, RemoteCause, TaskError, XsiloError

__all__ = ["FedRemoteError", "RemoteCause", "TaskError", "XsiloError"]
