"""RayFed's ``fed.tree_util``: flatten nested lists, tuples and dicts into
their leaves and rebuild them.

    leaves, tree = tree_flatten([1, (2, 3), {"a": 4}])   # [1, 2, 3, 4]
    tree_unflatten(["x", 2, 3, 4], tree)                 # ["x", (2, 3), {"a": 4}]

Lists, tuples (namedtuples too) and dicts are containers; everything else,
``None`` and sets included, is a leaf. Dict keys keep their order.
"""

from typing import Any, List, Tuple

__all__ = ["PyTreeDef", "tree_flatten", "tree_unflatten"]


class PyTreeDef:
    """The shape of a flattened value: a leaf, or a container's type (and
    keys, for a dict) with the shapes of its items."""

    __slots__ = ("kind", "meta", "children", "num_leaves")

    def __init__(self, kind: str, meta: Any, children: List["PyTreeDef"]):
        self.kind = kind
        self.meta = meta
        self.children = children
        self.num_leaves = 1 if kind == "leaf" else sum(c.num_leaves for c in children)

    def __repr__(self) -> str:
        if self.kind == "leaf":
            return "*"
        inner = ", ".join(repr(c) for c in self.children)
        return f"{self.kind}({inner})"


def _flatten(obj: Any, leaves: List[Any]) -> PyTreeDef:
    if isinstance(obj, dict):
        keys = list(obj.keys())
        return PyTreeDef("dict", (type(obj), keys), [_flatten(obj[k], leaves) for k in keys])
    if isinstance(obj, (list, tuple)):
        kind = "list" if isinstance(obj, list) else "tuple"
        return PyTreeDef(kind, type(obj), [_flatten(x, leaves) for x in obj])
    leaves.append(obj)
    return PyTreeDef("leaf", None, [])


def tree_flatten(tree: Any) -> Tuple[List[Any], PyTreeDef]:
    """The leaves of ``tree`` in order, and its shape."""
    leaves: List[Any] = []
    return leaves, _flatten(tree, leaves)


def _build(spec: PyTreeDef, it) -> Any:
    if spec.kind == "leaf":
        return next(it)
    items = [_build(c, it) for c in spec.children]
    if spec.kind == "dict":
        cls, keys = spec.meta
        out = dict(zip(keys, items))
        return out if cls is dict else cls(out)
    cls = spec.meta
    if spec.kind == "list":
        return items if cls is list else cls(items)
    if cls is tuple:
        return tuple(items)
    if hasattr(cls, "_fields"):
        return cls(*items)
    return cls(items)


def tree_unflatten(leaves: List[Any], tree_def: PyTreeDef) -> Any:
    """The value of shape ``tree_def`` with ``leaves`` in order."""
    leaves = list(leaves)
    if len(leaves) != tree_def.num_leaves:
        raise ValueError(f"tree_unflatten(): the shape has {tree_def.num_leaves} leaves, {len(leaves)} given")
    return _build(tree_def, iter(leaves))
