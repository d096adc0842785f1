r"""YAML settings read with bounds: a size limit on the text and on the *expanded* document.

YAML aliases let a few hundred bytes describe a structure of :math:`k^n` nodes (``&a [x, x]``,
``&b [*a, *a]``, ...: each level doubles it). PyYAML shares the aliased objects, so loading
is cheap, but anything that copies or writes the settings (``dataclasses.asdict``, JSON)
expands them. :func:`load` composes the node graph (no Python objects yet), counts the nodes
of its expansion with every alias counted as often as it is used (memoised per node, so the
count itself costs one pass over the graph), and refuses the document in one line when the
text is over ``MAX_BYTES``, the expansion over ``MAX_NODES`` nodes, or an alias refers to
itself. Only then does the safe constructor build the values.

>>> load("lr: 0.01\nlr_milestones: [2, 3]", "example")
{'lr': 0.01, 'lr_milestones': [2, 3]}
>>> load("a: &a [1, 1]\nb: &b [*a, *a]\nc: [*b, *b]", "example", max_nodes=10)
Traceback (most recent call last):
...
ValueError: example expands to more than 10 YAML nodes (aliases counted as often as they are used); write the settings out without aliases
"""
from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1 << 20   # settings text (a preset is ~1 kB)
MAX_NODES = 100_000   # nodes of the expanded document


def _expanded_nodes(root, limit: int, what: str) -> int:
    """Nodes of ``root`` with aliases expanded; raises past ``limit`` or on a cycle."""
    size: dict = {}
    stack = [(root, False)]
    active: set = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            if size[key] > limit:
                raise ValueError(f"{what} expands to more than {limit} YAML nodes (aliases counted as often as "
                                 "they are used); write the settings out without aliases")
            continue
        if key in size:
            continue
        if key in active:
            raise ValueError(f"{what} holds an alias that contains itself; write the settings out without aliases")
        active.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)
    return size[id(root)]


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load(text: str, what: str, max_bytes: int = MAX_BYTES, max_nodes: int = MAX_NODES) -> Any:
    """``yaml.safe_load(text)`` within the bounds above; ``what`` names the source in errors."""
    if len(text) > max_bytes:
        raise ValueError(f"{what} is {len(text):,} characters, more than the {max_bytes:,} settings may take")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_nodes(node, max_nodes, what)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ValueError(f"{what} is not valid YAML ({' '.join(str(e).split())[:160]})") from None
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply to be settings") from None
    finally:
        loader.dispose()
