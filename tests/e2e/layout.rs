//! The module graphs of `auth-sidecar` and `omni2-core` have no cycles: every import arrow
//! points down a layer.
//!
//! The rule, per crate (library modules only; `main.rs` and `src/bin/` are other crates):
//! - a node is a module, named by its path (`keys::jwks`), found from the `src/` file tree;
//! - module A has an edge to module B when A's non-test code names a path `crate::…` or
//!   `super::…` that resolves to B (the longest prefix of the path that is a module) —
//!   in `use` trees, expressions, types and macro bodies alike; comments and strings do not
//!   count (the files are tokenised, not grepped);
//! - a parent has an edge to each of its own children (it declares them, so it contains
//!   them); a child naming its parent or any other ancestor is not an edge (that is how a
//!   child reaches the items it helps implement);
//! - test code is left out: `#[cfg(test)]` items and the modules they declare (`tests.rs`).
//!
//! A cycle is a strongly connected component with more than one module; the test names one
//! cycle through each. The `*_KNOWN_CYCLES` lists may name a cycle tolerated while it is
//! being removed (both are empty); a listed cycle that is gone fails the test too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// Tolerated cycles, as the sorted module set of each strongly connected component.
const OMNI2_CORE_KNOWN_CYCLES: &[&[&str]] = &[];

const AUTH_SIDECAR_KNOWN_CYCLES: &[&[&str]] = &[];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Maps `src/a/b.rs` (or `src/a/b/mod.rs`) to `a::b`; `lib.rs` is the root, `""`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if parts.first().is_some_and(|p| p == "bin") || (parts.is_empty() && stem == "main") {
        return None;
    }
    match stem {
        "lib" if parts.is_empty() => {}
        "mod" => {}
        _ => parts.push(stem.to_owned()),
    }
    Some(parts.join("::"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_punct(t: &TokenTree, c: char) -> bool {
    matches!(t, TokenTree::Punct(p) if p.as_char() == c)
}

fn is_ident(t: &TokenTree, name: &str) -> bool {
    matches!(t, TokenTree::Ident(i) if i == name)
}

/// `#[cfg(test)]` exactly (not `cfg(any(test, …))`: that code ships with a feature).
fn is_cfg_test(group: &TokenTree) -> bool {
    let TokenTree::Group(g) = group else {
        return false;
    };
    g.delimiter() == Delimiter::Bracket && g.stream().to_string().replace(' ', "") == "cfg(test)"
}

/// The paths a token stream names, as segment lists starting at `crate` or `super`, with
/// `use` groups expanded; and the names of child modules declared `#[cfg(test)]`.
#[derive(Default)]
struct Scan {
    paths: Vec<Vec<String>>,
    test_mods: Vec<String>,
}

fn scan(stream: TokenStream, out: &mut Scan) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        // `#[cfg(test)] <item>`: skip the item, up to its `;` or its `{…}` body.
        if is_punct(&tokens[i], '#') && tokens.get(i + 1).is_some_and(is_cfg_test) {
            i += 2;
            if tokens.get(i).is_some_and(|t| is_ident(t, "mod"))
                && let Some(TokenTree::Ident(name)) = tokens.get(i + 1)
                && tokens.get(i + 2).is_some_and(|t| is_punct(t, ';'))
            {
                out.test_mods.push(name.to_string());
            }
            while i < tokens.len() {
                let end = is_punct(&tokens[i], ';')
                    || matches!(&tokens[i], TokenTree::Group(g) if g.delimiter() == Delimiter::Brace);
                i += 1;
                if end {
                    break;
                }
            }
            continue;
        }
        let starts_path = (is_ident(&tokens[i], "crate") || is_ident(&tokens[i], "super"))
            && !(i > 0 && is_punct(&tokens[i - 1], '$'))
            && !(i > 1 && is_punct(&tokens[i - 1], ':') && is_punct(&tokens[i - 2], ':'));
        if starts_path {
            i = path_tree(&tokens, i, Vec::new(), &mut out.paths);
            continue;
        }
        if let TokenTree::Group(g) = &tokens[i] {
            scan(g.stream(), out);
        }
        i += 1;
    }
}

/// Reads `a::b::{c, d::e}` from `tokens[i]`, pushing each complete path onto `prefix`;
/// returns the index after it.
fn path_tree(
    tokens: &[TokenTree],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match tokens.get(i) {
            Some(TokenTree::Ident(id)) => {
                prefix.push(id.to_string());
                i += 1;
            }
            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                let mut j = 0;
                while j < inner.len() {
                    j = path_tree(&inner, j, prefix.clone(), out);
                    // Skip `as alias`, `*` and the separating comma.
                    while j < inner.len() && !is_punct(&inner[j], ',') {
                        j += 1;
                    }
                    j += 1;
                }
                return i + 1;
            }
            _ => break,
        }
        if tokens.get(i).is_some_and(|t| is_punct(t, ':'))
            && tokens.get(i + 1).is_some_and(|t| is_punct(t, ':'))
        {
            i += 2;
        } else {
            break;
        }
    }
    if !prefix.is_empty() {
        out.push(prefix);
    }
    i
}

fn parent(module: &str) -> &str {
    module.rsplit_once("::").map_or("", |(p, _)| p)
}

fn is_ancestor(ancestor: &str, module: &str) -> bool {
    ancestor.is_empty() || module.starts_with(&format!("{ancestor}::"))
}

/// The module a path names: its longest prefix that is a module of the crate.
fn resolve(from: &str, path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    let mut base: Vec<&str> = if from.is_empty() {
        Vec::new()
    } else {
        from.split("::").collect()
    };
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => base.clear(),
        Some("super") => {}
        _ => return None,
    }
    while let Some(seg) = rest.first() {
        match seg.as_str() {
            "crate" => {}
            "super" => {
                base.pop();
            }
            _ => break,
        }
        rest = &rest[1..];
    }
    let mut found = base.join("::");
    let mut current = base.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for seg in rest {
        current.push(seg.clone());
        let candidate = current.join("::");
        if modules.contains(&candidate) {
            found = candidate;
        } else {
            break;
        }
    }
    Some(found)
}

fn module_graph(crate_dir: &str) -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut scans = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        let stream = TokenStream::from_str(&text)
            .unwrap_or_else(|e| panic!("tokenise {}: {e:?}", file.display()));
        let mut s = Scan::default();
        scan(stream, &mut s);
        scans.insert(module, s);
    }
    let test_only: Vec<String> = scans
        .iter()
        .flat_map(|(m, s)| {
            s.test_mods.iter().map(move |t| {
                if m.is_empty() {
                    t.clone()
                } else {
                    format!("{m}::{t}")
                }
            })
        })
        .collect();
    scans.retain(|m, _| {
        !test_only
            .iter()
            .any(|t| m == t || m.starts_with(&format!("{t}::")))
    });
    let modules: BTreeSet<String> = scans.keys().cloned().collect();
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for (module, s) in &scans {
        if !module.is_empty() {
            graph
                .get_mut(parent(module))
                .expect("parent module has a file")
                .insert(module.clone());
        }
        for path in &s.paths {
            let Some(target) = resolve(module, path, &modules) else {
                continue;
            };
            if target != *module && !is_ancestor(&target, module) {
                graph.get_mut(module).unwrap().insert(target);
            }
        }
    }
    // The crate root only declares modules; what it re-exports is not a layer.
    graph.remove("");
    for edges in graph.values_mut() {
        edges.remove("");
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan), each sorted.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// One concrete cycle through the component's first module (shortest, by BFS).
fn one_cycle(graph: &Graph, scc: &[String]) -> String {
    let start = &scc[0];
    let members: BTreeSet<&String> = scc.iter().collect();
    let mut prev: BTreeMap<&String, &String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in &graph[v] {
            if !members.contains(w) {
                continue;
            }
            if w == start {
                // Walk back from `v` to the start, then close the loop.
                let mut path = vec![v.as_str()];
                let mut at = v;
                while at != start {
                    at = prev[at];
                    path.push(at.as_str());
                }
                path.reverse();
                path.push(start.as_str());
                return path.join(" → ");
            }
            if !prev.contains_key(w) && w != start {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    unreachable!("a strongly connected component has a cycle through each member")
}

fn report(name: &str, graph: &Graph) -> String {
    let mut text = format!("{name} module graph:\n");
    for (m, edges) in graph {
        let edges: Vec<&str> = edges.iter().map(String::as_str).collect();
        text.push_str(&format!("  {m} → {}\n", edges.join(", ")));
    }
    text
}

fn check(name: &str, crate_dir: &str, known: &[&[&str]]) {
    let graph = module_graph(crate_dir);
    println!("{}", report(name, &graph));
    let found = cycles(&graph);
    let known: Vec<Vec<String>> = known
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect();
    let mut problems = Vec::new();
    for scc in &found {
        let cycle = one_cycle(&graph, scc);
        if known.contains(scc) {
            println!("{name}: known cycle (allow-listed): {cycle}");
        } else {
            problems.push(format!(
                "{name}: module cycle {cycle} (component: {})",
                scc.join(", ")
            ));
        }
    }
    for k in &known {
        if !found.contains(k) {
            problems.push(format!(
                "{name}: allow-listed cycle {} is gone; remove it from the list",
                k.join(", ")
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn auth_sidecar_modules_are_acyclic() {
    check("auth-sidecar", "auth-sidecar", AUTH_SIDECAR_KNOWN_CYCLES);
}

#[test]
fn omni2_core_modules_are_acyclic() {
    check("omni2-core", "omni2-core", OMNI2_CORE_KNOWN_CYCLES);
}

#[test]
fn the_checker_finds_a_cycle_and_ignores_comments_and_tests() {
    let modules: BTreeSet<String> = ["a", "b", "b::c"].iter().map(|s| s.to_string()).collect();
    let mut s = Scan::default();
    let src = "use crate::{a::X, b::c::{Y, Z as W}};\n// crate::zzz\nfn f() { let _ = \"crate::q\"; super::super::a::g(); }\n#[cfg(test)] mod tests;\n#[cfg(test)] mod inline { use crate::nope; }";
    scan(TokenStream::from_str(src).unwrap(), &mut s);
    let resolved: BTreeSet<String> = s
        .paths
        .iter()
        .filter_map(|p| resolve("b::c", p, &modules))
        .collect();
    assert_eq!(
        resolved,
        ["a", "b::c"].iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(s.test_mods, ["tests"]);

    let mut graph = Graph::new();
    graph.insert("a".into(), ["b".to_string()].into());
    graph.insert("b".into(), ["b::c".to_string()].into());
    graph.insert("b::c".into(), ["a".to_string()].into());
    graph.insert("d".into(), ["a".to_string()].into());
    let found = cycles(&graph);
    assert_eq!(found, vec![vec!["a", "b", "b::c"]]);
    assert_eq!(one_cycle(&graph, &found[0]), "a → b → b::c → a");
}
