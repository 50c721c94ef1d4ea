"""RayFed's ``fed.proxy.barriers``: ``ping_others``."""

from typing import Dict

import xsilo as _xsilo

__all__ = ["ping_others"]

# RayFed waits about this long between two pings of a party not yet up.
_SECONDS_PER_RETRY = 2.0


def ping_others(addresses: Dict[str, str], self_party: str, max_retries: int = 3600) -> bool:
    """Waits until every other party of the running job is up (it connected
    to us, or we to it), for at most ``max_retries`` tries of about two
    seconds each, as RayFed does. Returns True; raises RuntimeError naming
    the parties not reached. ``addresses`` and ``self_party`` must be the
    job's (RayFed's signature)."""
    node = _xsilo._require()
    if self_party != node.party:
        raise ValueError(f"ping_others(): this process runs party {node.party!r}, not {self_party!r}")
    unknown = sorted(set(addresses) - {node.party} - set(node.peers))
    if unknown:
        raise ValueError(f"ping_others(): {unknown[0]!r} is not a party of this job")
    try:
        node.barrier(max(1, int(max_retries)) * _SECONDS_PER_RETRY)
    except _xsilo._xsilo.RuntimeFailure as e:
        raise RuntimeError(f"ping_others(): {e.args[1]}") from None
    return True
