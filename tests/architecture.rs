//! The architecture's invariants, read off the source tree: no module of a crate imports one
//! that imports it back, every binary's `main.rs` stays a thin wrapper, and the Makefile's
//! stage rules are exactly the stage graph `formats::paths::Stage` defines (the zoo workflow
//! reads its jobs from `pipeline zoo-plan`, which derives them from the same graph).

use formats::paths::{Stage, CONFIG_DIR};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn crate_sources() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// The code of a Rust file without its comments (line comments, doc comments included).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segment of every `crate::` path in `code`, braces included
/// (`use crate::{a::X, b}` names `a` and `b`).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item) = (0, String::new());
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(ch);
            }
            out.insert(first_ident(&item));
        } else {
            out.insert(first_ident(rest));
        }
    }
    out.remove("");
    out
}

fn first_ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// A cycle in `graph`, if any, as the modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            return Some(path[at..].iter().cloned().chain([m.to_string()]).collect());
        }
        if !done.insert(m.to_string()) {
            return None;
        }
        path.push(m.to_string());
        for next in &graph[m] {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut checked = 0;
    for src in crate_sources() {
        let files: Vec<PathBuf> = std::fs::read_dir(&src)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .collect();
        let name = |p: &Path| p.file_stem().unwrap().to_string_lossy().into_owned();
        let modules: BTreeSet<String> = files.iter().map(|p| name(p)).collect();
        let graph: BTreeMap<String, BTreeSet<String>> = files
            .iter()
            .map(|p| {
                let m = name(p);
                let uses = crate_paths(&code(p))
                    .into_iter()
                    .filter(|d| *d != m && modules.contains(d))
                    .collect();
                (m, uses)
            })
            .collect();
        checked += graph.values().map(BTreeSet::len).sum::<usize>();
        assert_eq!(
            find_cycle(&graph),
            None,
            "an import cycle in {}",
            src.display()
        );
    }
    assert!(
        checked > 50,
        "only {checked} imports found: is the parser reading the tree?"
    );
}

#[test]
fn the_cycle_finder_finds_cycles() {
    assert_eq!(
        crate_paths("use crate::{a::X, b::{Y, Z}};\nlet v = crate::c::f();"),
        ["a", "b", "c"].map(String::from).into()
    );
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(find_cycle(&graph(&[("a", "b"), ("b", "c")])), None);
    let cycle = find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])).unwrap();
    assert_eq!(cycle.len(), 4, "{cycle:?}");
}

#[test]
fn every_binary_is_a_thin_main() {
    let mut mains = 0;
    for src in crate_sources() {
        let main = src.join("main.rs");
        if let Ok(text) = std::fs::read_to_string(&main) {
            mains += 1;
            let lines = text.lines().count();
            assert!(lines < 100, "{}: {lines} lines", main.display());
        }
    }
    assert!(mains >= Stage::ALL.len(), "{mains} binaries");
}

/// The Makefile's `NAME = value` and `target: prerequisites` lines.
fn makefile() -> (BTreeMap<String, String>, BTreeMap<String, Vec<String>>) {
    let text = std::fs::read_to_string(root().join("Makefile")).unwrap();
    let (mut vars, mut rules) = (BTreeMap::new(), BTreeMap::new());
    for line in text.lines().filter(|l| !l.starts_with(['\t', '#'])) {
        if let Some((name, value)) = line.split_once(" = ").or(line.split_once(" := ")) {
            vars.insert(name.trim().to_string(), value.trim().to_string());
        } else if let Some((target, needs)) = line.split_once(':') {
            let needs = needs.trim_start_matches('=').trim_start_matches(' ');
            rules.insert(
                target.trim().trim_end_matches(" &").to_string(),
                needs.split_whitespace().map(String::from).collect(),
            );
        }
    }
    (vars, rules)
}

#[test]
fn the_makefile_runs_the_stage_graph() {
    let (vars, rules) = makefile();
    let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(vars["STAGES"], names.join(" "), "STAGES");
    assert_eq!(
        vars["S"],
        format!("$(WORK)/{CONFIG_DIR}"),
        "the stamps' folder"
    );
    for stage in Stage::ALL {
        let var = stage.name().to_uppercase();
        let target = match stage.done_file() {
            Some(file) => {
                let folder = match stage {
                    Stage::Report => "$(REPORTS)".to_string(),
                    s => format!("$(WORK)/{}", s.name()),
                };
                assert_eq!(vars[&var], format!("{folder}/{file}"), "{stage}'s file");
                format!("$({var})")
            }
            None => "$(INPUTS)".to_string(),
        };
        let mut expected: Vec<String> = match stage {
            Stage::Ingest => vec!["$(INGEST_INPUTS)".into()],
            s => s
                .reads()
                .iter()
                .map(|r| format!("$({})", r.name().to_uppercase()))
                .collect(),
        };
        expected.extend(stage.tables().iter().map(|t| format!("$(S)/{t}.json")));
        expected.push(format!("$(CODE)/{}", stage.name()));
        let needs = rules
            .get(&target)
            .unwrap_or_else(|| panic!("no rule for {target}"));
        assert_eq!(needs, &expected, "the rule for {stage}");
    }
}

#[test]
fn the_zoo_workflow_takes_its_jobs_from_the_plan() {
    let text = std::fs::read_to_string(root().join("workflow/Snakefile")).unwrap();
    assert!(text.contains(r#"n["jobs"]"#));
    for stage in Stage::ALL {
        if let Some(file) = stage.done_file() {
            assert!(!text.contains(file), "the Snakefile names {file} itself");
        }
    }
}

/// All Rust code below `dir`, comments dropped.
fn code_below(dir: &Path) -> String {
    let mut text = String::new();
    for e in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        if e.is_dir() {
            text += &code_below(&e);
        } else if e.extension().is_some_and(|x| x == "rs") {
            text += &code(&e);
        }
    }
    text
}

/// What `cargo machete` checks: every dependency a Cargo.toml lists is named in the code it
/// builds (a library's in `src/`; a dev-dependency anywhere in the crate).
#[test]
fn every_dependency_is_used() {
    let mut crates: Vec<PathBuf> = crate_sources()
        .into_iter()
        .map(|s| s.parent().unwrap().to_path_buf())
        .collect();
    crates.push(root().join("tests"));
    let mut checked = 0;
    for dir in crates {
        let manifest: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let all = code_below(&dir);
        let src = dir.join("src");
        let lib = if src.is_dir() {
            code_below(&src)
        } else {
            all.clone()
        };
        for (section, code) in [("dependencies", &lib), ("dev-dependencies", &all)] {
            let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) else {
                continue;
            };
            for key in deps.keys() {
                // The name the code uses: ours without the prefix, `-` as `_`.
                let name = key.trim_start_matches("fineprune-").replace('-', "_");
                let used =
                    code.contains(&format!("{name}::")) || code.contains(&format!("use {name}"));
                assert!(used, "{}: {section} {key} is never used", dir.display());
                checked += 1;
            }
        }
    }
    assert!(checked > 50, "only {checked} dependencies checked");
}
