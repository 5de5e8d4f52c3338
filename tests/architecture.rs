//! The map matches the code (docs/architecture.md): which part may use which, and no
//! function too long to read. A violation fails CI with the file and line at fault.
//!
//! Imports are read as text: every `crate::<part>` path in a part's files, outside
//! comments, is a use of that part (a `use` line, or a path written inline). Function
//! lengths are counted from the `fn` line to its closing brace, tests excluded
//! (`#[cfg(test)]` modules, `tests.rs`, `proptests.rs`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// No function longer than this, unless its doc comment says why it is kept whole...
const SOFT_LIMIT: usize = 100;
/// ...and none longer than this at all.
const HARD_LIMIT: usize = 150;
/// What a doc comment says to keep a function over [`SOFT_LIMIT`] in one piece.
const KEPT_WHOLE: &str = "Kept whole:";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The code of a line without its comment (strings are kept: a `//` inside one is rare
/// enough in this code base, and only makes the check stricter).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// The parts (`crate::<part>`) a file uses.
fn parts_used(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in text.lines() {
        let mut rest = code(line);
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}`
            if name.is_empty() && after.starts_with('{') {
                let inner = &after[1..after.find('}').unwrap_or(after.len())];
                for part in inner.split(',') {
                    let p: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !p.is_empty() {
                        used.insert(p);
                    }
                }
            } else if !name.is_empty() {
                used.insert(name);
            }
            rest = after;
        }
    }
    used
}

/// (part, the parts it must not use) or (part, the only parts it may use).
enum Rule {
    Never(&'static [&'static str]),
    Only(&'static [&'static str]),
}

/// The agent's allowed directions (docs/architecture.md). `Error` is the crate's error
/// type, not a part.
/// The scorer is a crate of its own (`scorer/`): Cargo keeps it from using the agent.
const AGENT: &[(&str, Rule)] = &[
    ("decide", Rule::Only(&["scorer", "alarm"])),
    (
        "alarm",
        Rule::Never(&["config", "link", "run", "decide", "tick"]),
    ),
    (
        "rules",
        Rule::Never(&["config", "link", "run", "decide", "tick"]),
    ),
    (
        "sampler",
        Rule::Never(&["config", "link", "run", "decide", "tick"]),
    ),
    (
        "simulate",
        Rule::Never(&["config", "link", "run", "decide", "tick"]),
    ),
    ("frame.rs", Rule::Only(&[])),
    ("out.rs", Rule::Only(&[])),
    ("control.rs", Rule::Only(&[])),
    (
        "link",
        Rule::Never(&["config", "run", "tick", "decide", "rules"]),
    ),
    ("watch", Rule::Never(&["link", "run", "tick"])),
    ("tick.rs", Rule::Never(&["config", "link", "run"])),
    (
        "devices",
        Rule::Only(&[
            "decide", "alarm", "scorer", "rules", "tick", "out", "health", "persist",
        ]),
    ),
    ("homeassistant.rs", Rule::Never(&["config", "link", "run"])),
    ("health.rs", Rule::Never(&["config", "link", "run"])),
    ("sim_fleet.rs", Rule::Never(&["link", "run"])),
    ("upstream", Rule::Only(&["link"])),
];

/// The bridge's: plugins know nothing of the pipeline that feeds them.
const BRIDGE: &[(&str, Rule)] = &[("notify", Rule::Never(&["pipeline", "run"]))];

fn check_parts(crate_src: &Path, rules: &[(&str, Rule)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (part, rule) in rules {
        let path = crate_src.join(part);
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(&path, &mut files);
        } else {
            files.push(path.clone());
        }
        assert!(
            !files.is_empty() && files.iter().all(|f| f.exists()),
            "{}: the part is gone; update this test and docs/architecture.md",
            path.display()
        );
        let own = part.trim_end_matches(".rs");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for used in parts_used(&text) {
                if used == own || used == "Error" || used == "error" {
                    continue;
                }
                let bad = match rule {
                    Rule::Never(list) => list.contains(&used.as_str()),
                    Rule::Only(list) => !list.contains(&used.as_str()),
                };
                if bad {
                    problems.push(format!("{} uses crate::{used}", f.display()));
                }
            }
        }
    }
    problems
}

#[test]
fn each_part_uses_only_what_docs_architecture_md_allows() {
    let mut problems = check_parts(&root().join("agent/src"), AGENT);
    // The scorer's crate may use nothing of the agent: Cargo enforces it (the agent
    // depends on it), and its manifest must not turn that around.
    let manifest = std::fs::read_to_string(root().join("scorer/Cargo.toml")).unwrap();
    if manifest.contains("lookout-agent") {
        problems.push("scorer/Cargo.toml depends on the agent".into());
    }
    problems.extend(check_parts(&root().join("broker-bridge/src"), BRIDGE));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_import_check_sees_use_lines_braces_and_inline_paths() {
    let used = parts_used(
        "use crate::config::Settings;\nuse crate::{link, run::x};\n// crate::watch\nlet a = crate::scorer::Model::new();\n",
    );
    let used: Vec<&str> = used.iter().map(String::as_str).collect();
    assert_eq!(used, ["config", "link", "run", "scorer"]);
}

/// A function: its name, first line and length in lines.
#[derive(Debug)]
struct Function {
    name: String,
    line: usize,
    lines: usize,
    kept_whole: bool,
}

/// Functions of a file outside `#[cfg(test)]` modules, found by counting braces with
/// strings (raw ones and those spanning lines too), characters and comments skipped.
fn functions(text: &str) -> Vec<Function> {
    let lines: Vec<&str> = text.lines().collect();
    // Each line's braces, in order, outside strings, chars and comments.
    let mut braces: Vec<Vec<u8>> = vec![Vec::new(); lines.len()];
    let mut line_ends_fn_decl: Vec<bool> = vec![false; lines.len()];
    {
        let b = text.as_bytes();
        let (mut i, mut line) = (0, 0);
        let mut block_comments = 0usize;
        let bump = |c: u8, line: &mut usize| {
            if c == b'\n' {
                *line += 1;
            }
        };
        while i < b.len() {
            let c = b[i];
            if block_comments > 0 {
                if c == b'*' && b.get(i + 1) == Some(&b'/') {
                    block_comments -= 1;
                    i += 2;
                    continue;
                }
                if c == b'/' && b.get(i + 1) == Some(&b'*') {
                    block_comments += 1;
                    i += 2;
                    continue;
                }
                bump(c, &mut line);
                i += 1;
                continue;
            }
            match c {
                b'/' if b.get(i + 1) == Some(&b'/') => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                    continue;
                }
                b'/' if b.get(i + 1) == Some(&b'*') => {
                    block_comments = 1;
                    i += 2;
                    continue;
                }
                b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                    && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
                {
                    // A raw string: r"..." or r#"..."#, any number of #.
                    let mut j = i + 1;
                    let mut hashes = 0;
                    while b.get(j) == Some(&b'#') {
                        hashes += 1;
                        j += 1;
                    }
                    if b.get(j) != Some(&b'"') {
                        i += 1;
                        continue;
                    }
                    j += 1;
                    loop {
                        match b.get(j) {
                            None => break,
                            Some(b'"')
                                if b[j + 1..]
                                    .iter()
                                    .take(hashes)
                                    .filter(|&&h| h == b'#')
                                    .count()
                                    == hashes =>
                            {
                                j += 1 + hashes;
                                break;
                            }
                            Some(&x) => {
                                bump(x, &mut line);
                                j += 1;
                            }
                        }
                    }
                    i = j;
                    continue;
                }
                b'"' => {
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        if b[i] == b'\\' {
                            i += 1;
                        }
                        if i < b.len() {
                            bump(b[i], &mut line);
                        }
                        i += 1;
                    }
                }
                b'\'' => {
                    // A char literal ('x', '\n', '{'), or a lifetime ('a) left alone.
                    if b.get(i + 1) == Some(&b'\\') {
                        i += 2;
                        while i < b.len() && b[i] != b'\'' {
                            i += 1;
                        }
                    } else if b.get(i + 2) == Some(&b'\'') {
                        i += 2;
                    }
                }
                b'{' | b'}' => braces[line].push(c),
                b';' => line_ends_fn_decl[line] = true,
                b'\n' => line += 1,
                _ => {}
            }
            i += 1;
        }
    }
    let mut out = Vec::new();
    // Open functions: (name, first line, depth of their body, kept whole).
    let mut open: Vec<(String, usize, usize, bool)> = Vec::new();
    let mut depth = 0usize;
    let mut test_depth: Option<usize> = None;
    let mut cfg_test = false;
    let mut pending_fn: Option<(String, usize, bool)> = None;
    for (i, raw) in lines.iter().enumerate() {
        let t = raw.trim();
        if t.starts_with("#[cfg(test)]") {
            cfg_test = true;
        }
        if test_depth.is_none()
            && let Some(name) = fn_name(t)
        {
            let doc = lines[..i]
                .iter()
                .rev()
                .take_while(|l| {
                    let l = l.trim();
                    l.starts_with("///") || l.starts_with("#[")
                })
                .any(|l| l.contains(KEPT_WHOLE));
            pending_fn = Some((name, i + 1, doc));
        }
        // `fn f();` in a trait: no body.
        if braces[i].is_empty() && line_ends_fn_decl[i] && code(raw).trim_end().ends_with(';') {
            pending_fn = None;
        }
        for &c in &braces[i] {
            if c == b'{' {
                if cfg_test && test_depth.is_none() && (t.contains("mod ") || t.contains("fn ")) {
                    test_depth = Some(depth);
                    cfg_test = false;
                    pending_fn = None;
                } else if let Some((name, line, kept)) = pending_fn.take() {
                    open.push((name, line, depth, kept));
                }
                depth += 1;
            } else {
                depth = depth.saturating_sub(1);
                if test_depth == Some(depth) {
                    test_depth = None;
                }
                if open.last().is_some_and(|o| o.2 == depth) {
                    let (name, line, _, kept_whole) = open.pop().unwrap();
                    out.push(Function {
                        name,
                        line,
                        lines: i + 2 - line,
                        kept_whole,
                    });
                }
            }
        }
    }
    out
}

/// `fn name` at the start of a declaration (after `pub`, `async`, `const`, `unsafe`).
fn fn_name(line: &str) -> Option<String> {
    let mut words = line.split_whitespace().peekable();
    while let Some(w) = words.next() {
        match w {
            "fn" => {
                let name: String = words
                    .next()?
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                return (!name.is_empty()).then_some(name);
            }
            "pub" | "async" | "const" | "unsafe" | "extern" => {}
            w if w.starts_with("pub(") => {}
            _ => return None,
        }
    }
    None
}

#[test]
fn no_function_is_too_long_to_read() {
    let mut files = Vec::new();
    for dir in ["agent/src", "scorer/src", "broker-bridge/src", "shared/src"] {
        rust_files(&root().join(dir), &mut files);
    }
    let mut problems = Vec::new();
    let mut longest: Vec<(usize, String)> = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy();
        if name == "tests.rs"
            || name == "proptests.rs"
            || f.components().any(|c| c.as_os_str() == "tests")
        {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let rel = f.strip_prefix(root()).unwrap_or(&f).display().to_string();
        for func in functions(&text) {
            longest.push((func.lines, format!("{rel}:{} {}", func.line, func.name)));
            let too_long = func.lines > HARD_LIMIT || (func.lines > SOFT_LIMIT && !func.kept_whole);
            if too_long {
                problems.push(format!(
                    "{rel}:{}: fn {} is {} lines (limit {SOFT_LIMIT}, or {HARD_LIMIT} with a \"{KEPT_WHOLE}\" doc comment saying why)",
                    func.line, func.name, func.lines
                ));
            }
        }
    }
    longest.sort_by(|a, b| b.cmp(a));
    for (n, at) in longest.iter().take(10) {
        println!("{n:4} {at}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_length_count_skips_tests_strings_and_bodiless_fns() {
    let text = "fn a() {\n    let s = \"}\";\n    let c = '{';\n}\n\ntrait T {\n    fn b(&self);\n    fn c<'x>(&'x self) -> &'x str {\n        \"\"\n    }\n}\n\n#[cfg(test)]\nmod tests {\n    const J: &str = r#\"{\"a\": 1\"#;\n    const M: &str = \"{\n}}\";\n    fn d() {\n    }\n}\nfn e() {\n}\n";
    let f = functions(text);
    let got: Vec<(&str, usize, usize)> = f
        .iter()
        .map(|f| (f.name.as_str(), f.line, f.lines))
        .collect();
    assert_eq!(got, [("a", 1, 4), ("c", 8, 3), ("e", 21, 2)]);
}
