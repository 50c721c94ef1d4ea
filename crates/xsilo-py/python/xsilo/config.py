"""RayFed's ``fed.config``: the configuration of the job this process runs.

``get_cluster_config()`` gives the parties' addresses (``cluster_addresses``),
this party (``current_party``) and ``tls_config`` as ``fed.init`` received
them; ``get_job_config()`` gives the ``cross_silo_comm`` options as passed
(``cross_silo_comm_config_dict``). Both need a running ``fed.init`` of
RayFed's form (with an xsilo TOML file, read the file).
"""

from typing import Optional

import xsilo as _xsilo

__all__ = ["get_cluster_config", "get_job_config"]


def _current(config, what: str):
    if config is None:
        raise _xsilo.XsiloError(f"no {what} configuration: call fed.init(addresses=..., party=...) first")
    return config


def get_cluster_config(job_name: Optional[str] = None):
    """The cluster configuration of this process's job (``job_name`` is
    accepted for RayFed's signature; a process runs one job)."""
    return _current(_xsilo._cluster_config, "cluster")


def get_job_config(job_name: Optional[str] = None):
    """The job configuration of this process's job (``job_name`` is
    accepted for RayFed's signature; a process runs one job)."""
    return _current(_xsilo._job_config, "job")
