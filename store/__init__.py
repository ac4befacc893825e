"""store: bytes and trees.

Addresses and the canonical codec (:mod:`store.codec`), the NodeStore contract and its backends
(:mod:`store.base`, memory, file, S3), the decoded-node cache (:mod:`store.nodes`) and the prolly
tree (:mod:`store.tree`). Knows nothing of datoms. See docs/format.md.
"""
