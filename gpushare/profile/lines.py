"""YAML with line numbers: where each value of a profile sits in its file."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import yaml

from gpushare.profile.problems import ProfileProblem, format_path


class LineIndex:
    """1-based line of every node in a composed YAML document, by path."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def node_at(self, loc: Sequence[str | int]) -> yaml.Node | None:
        """The deepest node on the way to `loc` (the parent mapping where a key is missing)."""
        node = self.root
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                found = None
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == part:
                        found = value
                        break
                if found is None:
                    return node
                node = found
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    return node
                node = node.value[part]
            else:
                return node
        return node

    def line_of(self, loc: Sequence[str | int]) -> int:
        node = self.node_at(loc)
        return node.start_mark.line + 1 if node is not None else 0

    def model_lines(self, count: int) -> list[int]:
        lines = []
        for i in range(count):
            node = self.node_at(("models", i))
            lines.append(node.start_mark.line + 1 if node is not None else 0)
        return lines


def duplicate_keys(node: yaml.Node | None, path: tuple[str | int, ...] = ()) -> Iterator[ProfileProblem]:
    """PyYAML keeps the last of two equal keys silently; a profile with both is a mistake."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key)
            if name in seen:
                yield ProfileProblem(
                    format_path((*path, name)),
                    key.start_mark.line + 1,
                    "this key appears twice in the same mapping; keep one",
                )
            seen.add(name)
            yield from duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from duplicate_keys(item, (*path, i))
