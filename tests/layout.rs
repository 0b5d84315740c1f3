//! Layout rules from the house brief, checked in CI without Python: the imports between the
//! source files of each crate form no circle, and no source file is over 1,200 lines.
//!
//! The import check is a port of `scripts/import-graph.py` (which prints the edges and
//! circles for a reader): an edge A -> B means file A names an item through a `crate::`,
//! `super::` or `self::` path, or one that starts with a child module's name, and the path,
//! followed down the module tree as far as a file exists, ends in file B. So a `mod.rs` that
//! re-exports `pub use child::X` points at the child, and a child that imports
//! `use super::X` points at `mod.rs`. Declaring a module (`mod child;`) is not an edge;
//! comments, doc links and string literals are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 1200;

type Graph = BTreeMap<PathBuf, BTreeSet<PathBuf>>;

/// The text with comments, string and char literals blanked (newlines kept).
fn strip_code(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let n = c.len();
    let newlines = |a: usize, b: usize| c[a..b.min(n)].iter().filter(|&&x| x == '\n').count();
    let starts = |i: usize, s: &str| s.chars().enumerate().all(|(k, x)| c.get(i + k) == Some(&x));
    let word = |x: char| x.is_ascii_alphanumeric() || x == '_';
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < n {
        if starts(i, "//") {
            while i < n && c[i] != '\n' {
                i += 1;
            }
        } else if starts(i, "/*") {
            let (mut depth, mut j) = (1, i + 2);
            while j < n && depth > 0 {
                if starts(j, "/*") {
                    depth += 1;
                    j += 2;
                } else if starts(j, "*/") {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            out.extend(std::iter::repeat_n('\n', newlines(i, j)));
            i = j;
        } else if c[i] == 'r' && (i == 0 || !word(c[i - 1])) && raw_hashes(&c[i + 1..]).is_some() {
            let hashes = raw_hashes(&c[i + 1..]).unwrap();
            let body = i + 2 + hashes;
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let mut j = body;
            while j < n && !starts(j, &close) {
                j += 1;
            }
            let j = (j + 1 + hashes).min(n);
            out.push_str("\"\"");
            out.extend(std::iter::repeat_n('\n', newlines(i, j)));
            i = j;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < n && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            out.extend(std::iter::repeat_n('\n', newlines(i, j)));
            i = j + 1;
        } else if c[i] == '\'' {
            // A char literal ('a', '\n', '\u{..}') or a lifetime ('a).
            match char_literal_len(&c[i..]) {
                Some(len) => {
                    out.push_str("' '");
                    i += len;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// After an `r`: the number of `#` when a raw string starts here (`#*"`).
fn raw_hashes(c: &[char]) -> Option<usize> {
    let hashes = c.iter().take_while(|&&x| x == '#').count();
    (c.get(hashes) == Some(&'"')).then_some(hashes)
}

/// The length of the char literal at `c` (which starts with `'`), if it is one.
fn char_literal_len(c: &[char]) -> Option<usize> {
    if c.get(1) == Some(&'\\') {
        c.get(2)?;
        let close = c[3..].iter().position(|&x| x == '\'')?;
        Some(3 + close + 1)
    } else {
        (c.get(1).is_some_and(|&x| x != '\'') && c.get(2) == Some(&'\'')).then_some(3)
    }
}

/// `a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]; `a::b as c` names a::b.
fn expand_use_tree(tree: &str) -> Vec<String> {
    let words: Vec<&str> = tree.split_whitespace().collect();
    let mut kept = String::new();
    let mut k = 0;
    while k < words.len() {
        if words[k] == "as" && k + 1 < words.len() {
            // The alias may be followed by `,` or `}` in the same word.
            let rest = words[k + 1].trim_start_matches(|x: char| x.is_alphanumeric() || x == '_');
            kept.push_str(rest);
            k += 2;
        } else {
            kept.push_str(words[k]);
            k += 1;
        }
    }
    expand(&kept)
}

fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.to_string()];
    };
    let (prefix, inner) = (
        &tree[..open],
        &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())],
    );
    let (mut parts, mut level, mut start) = (Vec::new(), 0i32, 0);
    for (m, ch) in inner.char_indices() {
        match ch {
            '{' => level += 1,
            '}' => level -= 1,
            ',' if level == 0 => {
                parts.push(&inner[start..m]);
                start = m + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(p).into_iter().map(|q| format!("{prefix}{q}")))
        .collect()
}

/// One crate's files by module path.
struct Crate {
    files: BTreeMap<Vec<String>, PathBuf>,
}

/// The crates under a source root: the library (`lib.rs` and its modules) and, when there is
/// a `main.rs`, the binary (`main.rs` and the top-level modules it declares).
fn crates(root: &Path) -> Vec<Crate> {
    let mut all = Vec::new();
    walk(root, &mut all);
    let main = root.join("main.rs");
    let bin_mods: BTreeSet<String> = std::fs::read_to_string(&main)
        .map(|t| top_level_mods(&strip_code(&t)))
        .unwrap_or_default();
    let (mut lib, mut bin) = (BTreeMap::new(), BTreeMap::new());
    for path in all {
        let rel: Vec<String> = path
            .strip_prefix(root)
            .unwrap()
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let module = match rel.last().map(String::as_str) {
            Some("lib") | Some("main") if rel.len() == 1 => vec![],
            Some("mod") => rel[..rel.len() - 1].to_vec(),
            _ => rel.clone(),
        };
        if rel[0] == "bin" {
            continue; // other crate roots
        }
        if rel == ["main"] || bin_mods.contains(&rel[0]) {
            bin.insert(module, path);
        } else {
            lib.insert(module, path);
        }
    }
    [lib, bin]
        .into_iter()
        .filter(|f| !f.is_empty())
        .map(|files| Crate { files })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `mod x;` declarations of a crate root (the modules that live in their own files).
fn top_level_mods(code: &str) -> BTreeSet<String> {
    let toks: Vec<&str> = code
        .split(|c: char| c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    toks.windows(2)
        .filter(|w| w[0] == "mod" && w[1].ends_with(';'))
        .map(|w| w[1].trim_end_matches(';').to_string())
        .collect()
}

impl Crate {
    /// The file of the deepest module along an absolute path.
    fn resolve(&self, segments: &[String]) -> &PathBuf {
        let mut module: Vec<String> = Vec::new();
        for seg in segments {
            module.push(seg.clone());
            if !self.files.contains_key(&module) {
                module.pop();
                break;
            }
        }
        &self.files[&module]
    }

    fn edges(&self, graph: &mut Graph) {
        for (module, path) in &self.files {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let targets = graph.entry(path.clone()).or_default();
            for abs in self.paths_in(&strip_code(&text), module) {
                let target = self.resolve(&abs);
                if target != path {
                    targets.insert(target.clone());
                }
            }
        }
    }

    /// Absolute module paths named in `code`, with inline `mod x { }` blocks tracked.
    fn paths_in(&self, code: &str, file_mod: &[String]) -> Vec<Vec<String>> {
        let c: Vec<char> = code.chars().collect();
        let n = c.len();
        let ident_start = |x: char| x.is_ascii_alphabetic() || x == '_';
        let ident_char = |x: char| x.is_ascii_alphanumeric() || x == '_';
        let read_ident = |i: usize| {
            let mut j = i;
            while j < n && ident_char(c[j]) {
                j += 1;
            }
            j
        };
        let skip_ws = |mut i: usize| {
            while i < n && c[i].is_whitespace() {
                i += 1;
            }
            i
        };
        let mut stack: Vec<(Vec<String>, Option<usize>)> = vec![(file_mod.to_vec(), None)];
        let mut depth = 0usize;
        let mut pending: Option<(usize, String)> = None; // `mod x {`: the brace and x
        let mut out = Vec::new();
        let mut i = 0;
        while i < n {
            let ch = c[i];
            if ch == '{' {
                depth += 1;
                let cur = stack.last().unwrap().0.clone();
                if pending.as_ref().is_some_and(|(at, _)| *at == i) {
                    let (_, name) = pending.take().unwrap();
                    stack.push(([cur, vec![name]].concat(), Some(depth)));
                }
                i += 1;
                continue;
            }
            if ch == '}' {
                if stack.last().unwrap().1 == Some(depth) {
                    stack.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
                continue;
            }
            if ch.is_ascii_digit() {
                i = read_ident(i); // a number and its suffix (`1usize`) name nothing
                continue;
            }
            if !ident_start(ch) {
                i += 1;
                continue;
            }
            let prev = if i > 0 { Some(c[i - 1]) } else { None };
            let end = read_ident(i);
            let word: String = c[i..end].iter().collect();
            let cur = stack.last().unwrap().0.clone();
            if word == "use" && end < n && c[end].is_whitespace() {
                let semi = (end..n).find(|&j| c[j] == ';').unwrap_or(n);
                let tree: String = c[end..semi].iter().collect();
                for t in expand_use_tree(&tree) {
                    let segs: Vec<String> = t
                        .split("::")
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                    out.extend(self.absolute(&segs, &cur));
                }
                i = (semi + 1).min(n);
                continue;
            }
            if word == "mod" {
                let a = skip_ws(end);
                if a > end && a < n && ident_start(c[a]) {
                    let b = read_ident(a);
                    let brace = skip_ws(b);
                    if brace < n && c[brace] == '{' {
                        pending = Some((brace, c[a..b].iter().collect()));
                    }
                }
                i = end;
                continue;
            }
            // A path: IDENT (:: IDENT)+, its head not right after `:`.
            let mut segs = vec![word];
            let mut j = end;
            loop {
                let a = skip_ws(j);
                if !(a + 1 < n && c[a] == ':' && c[a + 1] == ':') {
                    break;
                }
                let b = skip_ws(a + 2);
                if b < n && ident_start(c[b]) {
                    let e = read_ident(b);
                    segs.push(c[b..e].iter().collect());
                    j = e;
                } else {
                    break;
                }
            }
            if segs.len() > 1 && prev != Some(':') {
                out.extend(self.absolute(&segs, &cur));
            }
            i = j;
        }
        out
    }

    fn absolute(&self, segs: &[String], cur: &[String]) -> Option<Vec<String>> {
        let first = segs.first()?;
        match first.as_str() {
            "crate" => Some(segs[1..].to_vec()),
            "self" => Some([cur, &segs[1..]].concat()),
            "super" => {
                let ups = segs.iter().take_while(|s| *s == "super").count();
                let base = &cur[..cur.len().saturating_sub(ups)];
                Some([base, &segs[ups..]].concat())
            }
            _ => {
                let child = [cur, &segs[..1]].concat();
                // A child module named without `self::`; otherwise an external crate or a
                // name in scope.
                self.files
                    .contains_key(&child)
                    .then(|| [cur, segs].concat())
            }
        }
    }
}

/// The import graph of every crate under a source root.
fn import_graph(root: &Path) -> Graph {
    let mut graph = Graph::new();
    for krate in crates(root) {
        krate.edges(&mut graph);
    }
    graph
}

/// The strongly connected sets of more than one file (Tarjan).
fn circles(graph: &Graph) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        on: BTreeSet<&'a PathBuf>,
        stack: Vec<&'a PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a PathBuf) {
        let k = s.index.len();
        s.index.insert(v, k);
        s.low.insert(v, k);
        s.stack.push(v);
        s.on.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on: BTreeSet::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// A shortest cycle through the first file of a strongly connected set, for the message.
fn one_cycle(graph: &Graph, comp: &[PathBuf]) -> Vec<PathBuf> {
    let start = &comp[0];
    let members: BTreeSet<&PathBuf> = comp.iter().collect();
    let mut prev: BTreeMap<&PathBuf, Option<&PathBuf>> = BTreeMap::from([(start, None)]);
    let mut frontier = vec![start];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for v in frontier {
            for w in &graph[v] {
                if w == start {
                    let mut path = vec![v.clone()];
                    while let Some(Some(p)) = prev.get(path.last().unwrap()) {
                        path.push((*p).clone());
                    }
                    path.reverse();
                    path.push(start.clone());
                    return path;
                }
                if members.contains(w) && !prev.contains_key(w) {
                    prev.insert(w, Some(v));
                    next.push(w);
                }
            }
        }
        frontier = next;
    }
    comp.to_vec()
}

/// One line per circle, e.g. `a/mod.rs -> a/b.rs -> a/mod.rs`, paths relative to `base`.
fn describe_circles(root: &Path, base: &Path) -> Vec<String> {
    let graph = import_graph(root);
    circles(&graph)
        .iter()
        .map(|comp| {
            let cycle = one_cycle(&graph, comp);
            let names: Vec<String> = cycle
                .iter()
                .map(|p| p.strip_prefix(base).unwrap_or(p).display().to_string())
                .collect();
            format!("circle among {} files: {}", comp.len(), names.join(" -> "))
        })
        .collect()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_import_circles_in_the_crates() {
    let base = repo();
    let mut found = Vec::new();
    for root in ["src", "kernels/src"] {
        let dir = base.join(root);
        assert!(dir.is_dir(), "{} is missing", dir.display());
        assert!(
            import_graph(&dir).len() > 5,
            "no source files found under {}",
            dir.display()
        );
        found.extend(describe_circles(&dir, &base));
    }
    assert!(
        found.is_empty(),
        "import circles (see scripts/import-graph.py --edges):\n{}",
        found.join("\n")
    );
}

/// Source files of the project: the crates, their tests, examples and benches (the vendored
/// candle-core is not ours).
#[test]
fn no_source_file_over_1200_lines() {
    let base = repo();
    let mut files = Vec::new();
    for dir in [
        "src",
        "kernels/src",
        "kernels/tests",
        "kernels/benches",
        "tests",
        "examples",
        "benches",
    ] {
        let dir = base.join(dir);
        if dir.is_dir() {
            walk(&dir, &mut files);
        }
    }
    assert!(files.len() > 20, "found only {} source files", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let lines = std::fs::read_to_string(p).unwrap().lines().count();
            (lines > MAX_LINES).then(|| {
                format!(
                    "{} has {lines} lines",
                    p.strip_prefix(&base).unwrap().display()
                )
            })
        })
        .collect();
    assert!(
        long.is_empty(),
        "source files over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// A tiny crate written to a temporary directory.
fn synthetic(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn edges_of(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (a, bs) in import_graph(dir) {
        for b in bs {
            let rel = |p: &Path| p.strip_prefix(dir).unwrap().display().to_string();
            out.push(format!("{} -> {}", rel(&a), rel(&b)));
        }
    }
    out
}

#[test]
fn a_child_importing_through_its_mod_rs_is_a_circle() {
    let dir = synthetic(&[
        ("lib.rs", "pub mod shapes;\n"),
        (
            "shapes/mod.rs",
            "mod circle;\nmod error;\npub use circle::Circle;\npub use error::ShapeError;\n",
        ),
        (
            "shapes/circle.rs",
            "use super::ShapeError;\npub struct Circle;\n",
        ),
        ("shapes/error.rs", "pub struct ShapeError;\n"),
    ]);
    let found = describe_circles(dir.path(), dir.path());
    assert_eq!(
        found,
        ["circle among 2 files: shapes/circle.rs -> shapes/mod.rs -> shapes/circle.rs"]
    );
}

#[test]
fn a_child_importing_the_sibling_file_is_no_circle() {
    let dir = synthetic(&[
        ("lib.rs", "pub mod shapes;\n"),
        (
            "shapes/mod.rs",
            "mod circle;\nmod error;\npub use circle::Circle;\npub use error::ShapeError;\n",
        ),
        (
            "shapes/circle.rs",
            "use super::error::ShapeError;\npub struct Circle;\n",
        ),
        ("shapes/error.rs", "pub struct ShapeError;\n"),
    ]);
    assert!(describe_circles(dir.path(), dir.path()).is_empty());
    assert_eq!(
        edges_of(dir.path()),
        [
            "shapes/circle.rs -> shapes/error.rs",
            "shapes/mod.rs -> shapes/circle.rs",
            "shapes/mod.rs -> shapes/error.rs"
        ]
    );
}

#[test]
fn a_circle_across_modules_through_inline_paths_is_found() {
    // kernels -> models (a re-export) and models -> kernels (an inline call).
    let dir = synthetic(&[
        ("lib.rs", "pub mod models;\npub mod nn;\n"),
        (
            "models/mod.rs",
            "pub mod vgg;\npub use crate::nn::Conv;\npub use vgg::Vgg;\n",
        ),
        ("models/vgg.rs", "pub struct Vgg;\n"),
        (
            "nn/mod.rs",
            "pub struct Conv;\nfn f() { let _ = crate::models::Vgg; }\n",
        ),
    ]);
    let found = describe_circles(dir.path(), dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("models/mod.rs") && found[0].contains("nn/mod.rs"),
        "{found:?}"
    );
    assert!(!found[0].contains("vgg.rs"), "{found:?}");
}

#[test]
fn comments_strings_tests_and_the_binary_are_read_as_rust() {
    let dir = synthetic(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        (
            "a.rs",
            // Only the use of b is an edge: a doc link, a comment, a string and the
            // test module's `super::*` (a itself) name nothing else.
            "//! See [`crate::b::X`].\n/* crate::b::Y */\nuse crate::b::X;\nconst S: &str = \"crate::lib\";\nconst R: &str = r#\"super::q\"#;\nconst C: char = '\"';\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
        ),
        ("b.rs", "pub struct X;\nconst N: u64 = 1usize::MAX as u64;\nfn g<'a>(x: &'a str) -> &'a str { x }\n"),
        ("main.rs", "mod cli;\nfn main() {}\n"),
        ("cli/mod.rs", "mod args;\nuse args::parse;\n"),
        // The binary's `crate` is main.rs, not lib.rs.
        ("cli/args.rs", "pub fn parse() { crate::main_helper(); }\n"),
    ]);
    assert_eq!(
        edges_of(dir.path()),
        [
            "a.rs -> b.rs",
            "cli/args.rs -> main.rs",
            "cli/mod.rs -> cli/args.rs"
        ]
    );
}

#[test]
fn use_trees_expand_to_their_leaves() {
    assert_eq!(
        expand_use_tree("a::{b, c::{d as e, f},\n g as h}"),
        ["a::b", "a::c::d", "a::c::f", "a::g"]
    );
    assert_eq!(
        expand_use_tree("super::resample::{self, py_round}"),
        ["super::resample::self", "super::resample::py_round"]
    );
}
