"""Development helpers: a whole job on one machine, with development
certificates. Not for production: the CA is made on the spot and its key
thrown away."""

from typing import Dict, List, Optional

from . import _xsilo


def write_local_job(directory: str, job: str, parties: List[str],
                    communication: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Writes a CA, each party's certificate and key, and one xsilo TOML
    configuration per party (free ports of 127.0.0.1) into ``directory``;
    returns each party's configuration path, for
    ``fed.init(config=path, party=name)``. ``communication`` adds
    ``[communication]`` settings, values as TOML text (``{"peer_lost_timeout": '"2s"'}``)."""
    extra = list((communication or {}).items())
    return _xsilo.write_local_job(directory, job, list(parties), extra or None)
