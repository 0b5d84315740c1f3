#!/usr/bin/env python3
"""List the import graph between the library's source files and report its circles.

An edge A -> B means file A names an item through a `crate::`, `super::` or `self::` path,
or one that starts with a child module's name (in a `use` or inline), that resolves to file B: each path is followed down the module tree
as far as a file exists (src/a/b.rs or src/a/b/mod.rs), so `crate::models::Ctx` points at
src/models/mod.rs, and `crate::models::vgg::Vgg` at src/models/vgg.rs. Declaring a child
module (`mod vgg;`) is not an edge; a parent that names its child's items is.
The binary (`main.rs` and the top-level modules it declares, e.g. `commands/`) is a crate of
its own: its `crate::` paths resolve from main.rs, not lib.rs.
tests/layout.rs runs the same check in CI (a port of this script).

Usage: scripts/import-graph.py [--root src] [--edges] [--ignore REGEX]...
Exit status 1 when there is a circle (each strongly connected set of files is printed with
one cycle through it).
"""

import argparse
import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_code(text):
    """The text with comments, string and char literals blanked (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and not re.match(r"[A-Za-z0-9_]", text[i - 1] if i else " "):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            j = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{..}') or a lifetime ('a).
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use_tree(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = re.sub(r"\s+as\s+" + IDENT, "", tree)  # `a::b as c` names a::b
    tree = re.sub(r"\s+", "", tree)
    depth = 0
    for k, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                prefix, inner = tree[:k], tree[k + 1 : tree.rfind("}")]
                parts, level, start = [], 0, 0
                for m, c2 in enumerate(inner):
                    if c2 == "{":
                        level += 1
                    elif c2 == "}":
                        level -= 1
                    elif c2 == "," and level == 0:
                        parts.append(inner[start:m])
                        start = m + 1
                parts.append(inner[start:])
                result = []
                for p in parts:
                    if p:
                        result += [prefix + q for q in expand_use_tree(p)]
                return result
            depth += 1
    return [tree]


def bin_modules(root):
    """Top-level modules that main.rs declares (`mod commands;`): they belong to the binary."""
    try:
        with open(os.path.join(root, "main.rs"), encoding="utf-8") as f:
            return set(re.findall(r"\bmod\s+(" + IDENT + r")\s*;", strip_code(f.read())))
    except FileNotFoundError:
        return set()


class Crate:
    def __init__(self, root, binary=False):
        self.root = root
        self.files = {}  # module path tuple -> file
        bin_mods = bin_modules(root)
        for dirpath, _, names in os.walk(root):
            for name in names:
                if not name.endswith(".rs"):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)[: -len(".rs")].split(os.sep)
                if rel[0] == "bin" or (rel == ["main"] or rel[0] in bin_mods) != binary:
                    continue  # another crate
                if rel in (["lib"], ["main"]):
                    mod = ()
                elif rel[-1] == "mod":
                    mod = tuple(rel[:-1])
                else:
                    mod = tuple(rel)
                self.files[mod] = path

    def resolve(self, segments):
        """The file of the deepest module along an absolute path."""
        mod = ()
        for seg in segments:
            if mod + (seg,) in self.files:
                mod = mod + (seg,)
            else:
                break
        return self.files[mod]

    def edges(self):
        out = {}
        for mod, path in self.files.items():
            with open(path, encoding="utf-8") as f:
                code = strip_code(f.read())
            targets = set()
            for abs_path in self.paths_in(code, mod):
                target = self.resolve(abs_path)
                if target != path:
                    targets.add(target)
            out[path] = targets
        return out

    def paths_in(self, code, file_mod):
        """Absolute module paths named in `code`, with inline `mod x { }` blocks tracked."""
        # The module path at each offset: inline modules push onto the file's path.
        stack = [(file_mod, None)]
        depth = 0
        inline = re.compile(r"\bmod\s+(" + IDENT + r")\s*\{")
        pieces = re.compile(
            r"\buse\s+([^;]+);|(?<![:\w])" + IDENT + r"(?:\s*::\s*" + IDENT + r")+|\{|\}"
        )
        pending = {m.end() - 1: m.group(1) for m in inline.finditer(code)}
        for m in pieces.finditer(code):
            tok = m.group(0)
            cur = stack[-1][0]
            if tok == "{":
                depth += 1
                if m.start() in pending:
                    stack.append((cur + (pending[m.start()],), depth))
                continue
            if tok == "}":
                if stack[-1][1] == depth:
                    stack.pop()
                depth -= 1
                continue
            trees = expand_use_tree(m.group(1)) if m.group(1) else [tok]
            for t in trees:
                segs = [s for s in re.sub(r"\s+", "", t).split("::") if s]
                if segs and segs[0].startswith("::"):
                    continue
                resolved = self.absolute(segs, cur, self.files)
                if resolved is not None:
                    yield resolved

    @staticmethod
    def absolute(segs, cur, files):
        if not segs:
            return None
        if segs[0] == "crate":
            return segs[1:]
        if segs[0] == "self":
            return list(cur) + segs[1:]
        if segs[0] == "super":
            base = list(cur)
            while segs and segs[0] == "super":
                base, segs = base[:-1], segs[1:]
            return base + segs
        if tuple(cur) + (segs[0],) in files:
            return list(cur) + segs  # a child module named without `self::`
        return None  # an external crate or a name in scope


def sccs(graph):
    index, low, on, stack, result, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            result.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [c for c in result if len(c) > 1]


def one_cycle(graph, comp):
    """A shortest cycle through the first file of a strongly connected set."""
    start, members = comp[0], set(comp)
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return list(reversed(path)) + [start]
                if w in members and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), "..", "src"))
    ap.add_argument("--edges", action="store_true", help="print every edge")
    ap.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="REGEX",
        help="leave out files whose path matches (e.g. files about to move out)",
    )
    args = ap.parse_args()
    root = os.path.normpath(args.root)
    crate = Crate(root)
    graph = crate.edges()
    graph.update(Crate(root, binary=True).edges())
    skip = lambda p: any(re.search(r, p) for r in args.ignore)
    graph = {a: {b for b in bs if not skip(b)} for a, bs in graph.items() if not skip(a)}
    rel = lambda p: os.path.relpath(p, os.path.dirname(crate.root))
    if args.edges:
        for a in sorted(graph):
            for b in sorted(graph[a]):
                print(f"{rel(a)} -> {rel(b)}")
    circles = sccs(graph)
    for comp in circles:
        print(f"circle among {len(comp)} files: " + " -> ".join(rel(p) for p in one_cycle(graph, comp)))
    if not circles:
        print(f"no circles among {len(graph)} files")
    return 1 if circles else 0


if __name__ == "__main__":
    sys.exit(main())
