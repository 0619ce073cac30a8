#!/usr/bin/env python3
"""No circles between sibling modules: the house plan's rule that Cargo cannot check.

Cargo refuses a cycle between crates; inside a crate nothing does. This reads every crate's
`src/` and, for each `crate::…` or `super::…` path a module names, records an edge between
the two sibling modules under their nearest common parent (`a::b` naming `a::c::d` is
`b -> c`). A module reaching into its own parent or child is not an edge (that is how a
module uses its parts and parts use the shared items above them). Unit-test modules
(`tests.rs`, `#[cfg(test)] mod tests { … }`) are left out: tests may look anywhere.

Prints each circle (a strongly connected group of siblings) and exits 1 if there is one.

    python3 scripts/check_module_circles.py [REPO_ROOT]
"""

import os
import re
import sys


def module_path(src: str, path: str) -> tuple:
    parts = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def expand_use_tree(tree: str) -> list:
    """`a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e` (`self` stands for the prefix)."""
    tree = re.sub(r"\s+", "", re.sub(r"\s+as\s+\w+", "", tree))
    brace = tree.find("{")
    if brace < 0:
        return [tree]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rfind("}")]
    items, depth, start = [], 0, 0
    for i, c in enumerate(inner):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    paths = []
    for item in filter(None, items):
        for path in expand_use_tree(item):
            paths.append(prefix.rstrip(":") if path == "self" else prefix + path)
    return paths


def paths_named(text: str) -> list:
    """Every `crate::…`/`super::…` path: in `use` trees (braces expanded) and inline."""
    paths = []
    for tree in re.findall(r"\buse\s+((?:crate|super)::[^;]*);", text):
        paths += expand_use_tree(tree)
    paths += re.findall(r"\b((?:crate|super)(?:::\w+)+)", text)
    return [re.sub(r"(::\*|\s+as\s+\w+)$", "", p) for p in paths]


def edges_of_crate(crate: str, src: str) -> dict:
    files = [
        os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs if f.endswith(".rs")
    ]
    modules = {module_path(src, f): f for f in files}
    edges: dict = {}
    for module, path in modules.items():
        if module and module[-1] == "tests":
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        # Code after an inline unit-test module is test code.
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests \{", text)[0]
        text = re.sub(r"//[^\n]*", "", text)  # comments and doc links are not uses
        for ref in paths_named(text):
            parts = ref.split("::")
            if parts[0] == "crate":
                target = parts[1:]
            else:
                base = list(module)
                while parts and parts[0] == "super":
                    base, parts = base[:-1], parts[1:]
                target = base + parts
            # The longest prefix that is a module (the rest names an item in it).
            resolved = next(
                (tuple(target[:i]) for i in range(len(target), 0, -1) if tuple(target[:i]) in modules),
                None,
            )
            if resolved is None or resolved == module:
                continue
            k = 0
            while k < min(len(module), len(resolved)) and module[k] == resolved[k]:
                k += 1
            if k == len(module) or k == len(resolved):
                continue  # parent or child
            a = (crate,) + module[: k + 1]
            b = (crate,) + resolved[: k + 1]
            edges.setdefault(a, set()).add(b)
    return edges


def circles(edges: dict) -> list:
    """Tarjan's strongly connected components of more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    sys.setrecursionlimit(10_000)
    crates_dir = os.path.join(root, "crates")
    edges: dict = {}
    for crate in sorted(os.listdir(crates_dir)):
        src = os.path.join(crates_dir, crate, "src")
        if os.path.isdir(src):
            edges.update(edges_of_crate(crate, src))
    found = circles(edges)
    for group in found:
        names = ["::".join(m) for m in group]
        print("circle: " + " <-> ".join(names))
        for a in group:
            for b in group:
                if b in edges.get(a, ()):
                    print(f"  {'::'.join(a)} uses {'::'.join(b)}")
    count = sum(len(v) for v in edges.values())
    print(f"{len(edges)} modules with sibling uses, {count} edges, {len(found)} circles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
