"""A subset of the Allen adult mouse ontology (structure graph 1), with the real ids, acronyms and colours.

Intermediate levels are left out (a child hangs under its nearest listed ancestor), but the fiber-tract
subtree keeps several levels, so "1009 and every descendant" is a real tree walk. The ventricles are
labelled in the annotation but are not fiber tracts.
"""

from __future__ import annotations

from typing import Any

# (id, acronym, name, colour, parent id)
STRUCTURES: tuple[tuple[int, str, str, str, int | None], ...] = (
    (997, "root", "root", "FFFFFF", None),
    (8, "grey", "Basic cell groups and regions", "BFDAE3", 997),
    (567, "CH", "Cerebrum", "B0F0FF", 8),
    (688, "CTX", "Cerebral cortex", "B0FFB8", 567),
    (315, "Isocortex", "Isocortex", "70FF71", 688),
    (385, "VISp", "Primary visual area", "08858C", 315),
    (417, "VISrl", "Rostrolateral visual area", "009FAC", 315),
    (312782628, "VISpor", "Postrhinal area", "08858C", 315),
    (329, "SSp-bfd", "Primary somatosensory area, barrel field", "188064", 315),
    (985, "MOp", "Primary motor area", "1F9D5A", 315),
    (39, "ACAd", "Anterior cingulate area, dorsal part", "40A666", 315),
    (623, "CNU", "Cerebral nuclei", "98D6F9", 567),
    (672, "CP", "Caudoputamen", "98D6F9", 623),
    (343, "BS", "Brain stem", "FF7080", 8),
    (549, "TH", "Thalamus", "FF7080", 343),
    (1097, "HY", "Hypothalamus", "E64438", 343),
    (313, "MB", "Midbrain", "FF64FF", 343),
    (1065, "HB", "Hindbrain", "FF9B88", 343),
    (512, "CB", "Cerebellum", "F0F080", 8),
    (1009, "fiber tracts", "fiber tracts", "CCCCCC", 997),
    (967, "cm", "cranial nerves", "CCCCCC", 1009),
    (848, "IIn", "optic nerve", "CCCCCC", 967),
    (983, "lfbs", "lateral forebrain bundle system", "CCCCCC", 1009),
    (776, "cc", "corpus callosum", "CCCCCC", 983),
    (956, "fa", "corpus callosum, anterior forceps", "CCCCCC", 776),
    (484682516, "ccb", "corpus callosum, body", "CCCCCC", 776),
    (784, "cst", "corticospinal tract", "CCCCCC", 983),
    (6, "int", "internal capsule", "CCCCCC", 784),
    (991, "mfbs", "medial forebrain bundle system", "CCCCCC", 1009),
    (1099, "fxs", "fornix system", "CCCCCC", 991),
    (436, "fx", "columns of the fornix", "CCCCCC", 1099),
    (73, "VS", "ventricular systems", "AAAAAA", 997),
    (81, "VL", "lateral ventricle", "AAAAAA", 73),
)

BY_ACRONYM = {acronym: sid for sid, acronym, _name, _colour, _parent in STRUCTURES}
BY_ID = {sid: (acronym, name, colour) for sid, acronym, name, colour, _parent in STRUCTURES}
_PARENT = {sid: parent for sid, _acronym, _name, _colour, parent in STRUCTURES}


def _lineage(sid: int | None) -> list[int]:
    chain = []
    while sid is not None:
        chain.append(sid)
        sid = _PARENT[sid]
    return chain


def lineage(sid: int) -> tuple[int, ...]:
    """``sid`` and its ancestors up to the root: S "contains" T when S is in ``lineage(T)``."""
    return tuple(_lineage(sid))


#: The fiber tracts (1009) and all their descendants: what the annotation marks as tract.
FIBER_TRACT_IDS = frozenset(sid for sid in _PARENT if 1009 in _lineage(sid))


def structure_tree() -> list[dict[str, Any]]:
    """The nested tree as ``structure_graph_download`` sends it: ``msg`` is ``[root]``."""
    nodes: dict[int, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for order, (sid, acronym, name, colour, parent) in enumerate(STRUCTURES):
        path = [sid] if parent is None else [*_path(nodes[parent]), sid]
        node: dict[str, Any] = {
            "id": sid,
            "atlas_id": None,
            "ontology_id": 1,
            "acronym": acronym,
            "name": name,
            "color_hex_triplet": colour,
            "graph_order": order,
            "st_level": len(path) - 1,
            "hemisphere_id": 3,
            "parent_structure_id": parent,
            "structure_id_path": "/" + "/".join(map(str, path)) + "/",
            "children": [],
        }
        nodes[sid] = node
        (roots if parent is None else nodes[parent]["children"]).append(node)
    return roots


def _path(node: dict[str, Any]) -> list[int]:
    return [int(part) for part in node["structure_id_path"].strip("/").split("/")]
