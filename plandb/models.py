"""Dataclasses returned by the public API. Plain data: no connections, no lazy loading."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class PlanSummary:
    """One row of `list_plans`: what the registry knows without opening the plan file."""

    id: int
    title: str
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    task_count: int = 0
    updated_at: str = ""
    created_at: str = ""
    owner: str | None = None
    state: str = "ready"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class PlanNode:
    """One task. `position` is the 0-based rank among its siblings (dense: 0..n-1)."""

    id: int
    plan_id: int
    name: str
    status: str = "pending"
    instruction: str | None = None
    parent_id: int | None = None
    position: int = 0
    path: str = ""
    depth: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    dependencies: list[int] = field(default_factory=list)
    execution_result: str | None = None
    context_combined: str | None = None
    context_sections: list[Any] = field(default_factory=list)
    context_meta: dict[str, Any] = field(default_factory=dict)
    context_updated_at: str | None = None
    created_at: str = ""
    updated_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], plan_id: int | None = None) -> PlanNode:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if plan_id is not None:
            known["plan_id"] = plan_id
        return cls(**known)


@dataclass(slots=True)
class PlanTree:
    """A whole plan: its nodes by id, children in order, roots in order."""

    id: int
    title: str
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    nodes: dict[int, PlanNode] = field(default_factory=dict)
    children: dict[int, list[int]] = field(default_factory=dict)
    roots: list[int] = field(default_factory=list)

    def ordered_nodes(self) -> list[PlanNode]:
        """Depth-first, siblings in position order (the order of an outline)."""
        return list(self._walk(self.roots))

    def _walk(self, ids: list[int]) -> Iterator[PlanNode]:
        stack = list(reversed(ids))
        while stack:
            node = self.nodes[stack.pop()]
            yield node
            stack.extend(reversed(self.children.get(node.id, ())))

    def to_outline(self, max_depth: int = 4, max_nodes: int = 60) -> str:
        """Indented text for prompts: `- [status] name (#id)`, cut with a note when too big."""
        lines = [f"Plan #{self.id}: {self.title}"]
        shown = hidden = 0
        for node in self.ordered_nodes():
            if node.depth >= max_depth or shown >= max_nodes:
                hidden += 1
                continue
            lines.append(f"{'  ' * node.depth}- [{node.status}] {node.name} (#{node.id})")
            shown += 1
        if hidden:
            lines.append(f"... {hidden} more tasks not shown")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (used for snapshots); nodes listed in outline order."""
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "metadata": self.metadata,
            "nodes": [n.to_dict() for n in self.ordered_nodes()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanTree:
        """Inverse of `to_dict`; children order follows each node's `position`."""
        tree = cls(
            id=data["id"],
            title=data.get("title") or "",
            description=data.get("description"),
            metadata=data.get("metadata") or {},
        )
        for raw in data.get("nodes", []):
            node = PlanNode.from_dict(raw, plan_id=data["id"])
            tree.nodes[node.id] = node
        tree.relink()
        return tree

    def relink(self) -> None:
        """Rebuild `children` and `roots` from each node's parent_id and position."""
        self.children = {}
        self.roots = []
        for node in sorted(self.nodes.values(), key=lambda n: (n.position, n.id)):
            if node.parent_id is None:
                self.roots.append(node.id)
            else:
                self.children.setdefault(node.parent_id, []).append(node.id)

    def __len__(self) -> int:
        return len(self.nodes)


@dataclass(slots=True)
class SnapshotInfo:
    """A stored snapshot of a plan tree (without its body)."""

    id: int
    plan_id: int
    note: str | None
    created_at: str
    task_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
