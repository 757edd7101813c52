//! Architecture check: every `crate::` path in `src/` follows the dependency table of DESIGN §3
//! (the full table is in STYLE.md, "Dependency direction").
//!
//! Each module of the crate is listed below with the modules it may use. A module the table does
//! not know, on either side of a path, is a failure: a new module must be placed in the table
//! before it can be used. `lib.rs` (re-exports only) and comments are exempt.

use std::path::{Path, PathBuf};

/// Layer 0: leaves.
const LEAVES: &[&str] = &["error", "buffers", "codec"];
/// What the hub layer (4) and everything above it may use.
const BELOW_HUB: &[&str] = &[
    "error",
    "buffers",
    "codec",
    "transport",
    "protocol",
    "entry",
    "bootstrap",
];
/// The layer-6 modules that sit on the hub's client only (no spawning).
const HUB_USERS: &[&str] = &["queue", "sync", "manager", "connection", "pipe", "shm"];

/// The modules `module` may use, or `None` if the table does not know it.
fn may_use(module: &str) -> Option<Vec<&'static str>> {
    let up_to_hub = || [BELOW_HUB, &["hub"]].concat();
    let up_to_start = || [up_to_hub(), vec!["start", "process"]].concat();
    Some(match module {
        "error" | "buffers" => vec![],
        // The user-value codec writes into the buffer pool's buffers.
        "codec" => vec!["buffers"],
        "transport" => LEAVES.to_vec(),
        "protocol" => LEAVES.to_vec(),
        "entry" => [LEAVES, &["protocol"]].concat(),
        "bootstrap" => [LEAVES, &["transport", "protocol", "entry"]].concat(),
        "hub" => BELOW_HUB.to_vec(),
        "start" => up_to_hub(),
        "process" => [up_to_hub(), vec!["start"]].concat(),
        "pool" | "actor" => up_to_start(),
        // A manager also makes the crate's own queues (and, later, locks and events).
        "manager" => [up_to_hub(), vec!["queue", "sync"]].concat(),
        m if HUB_USERS.contains(&m) => up_to_hub(),
        // A broker worker runs tasks on a local pool.
        "broker" => [up_to_start(), vec!["pool"]].concat(),
        "launch" => [
            up_to_start(),
            vec!["pool", "actor", "broker"],
            HUB_USERS.to_vec(),
        ]
        .concat(),
        _ => return None,
    })
}

/// Names at the crate root that are not modules: the macros, which any code may name.
const ROOT_MACROS: &[&str] = &["test", "process_main"];

/// Why `from` may not use `to`, or `None` if it may.
fn violation(from: &str, to: &str) -> Option<String> {
    if from == to || ROOT_MACROS.contains(&to) {
        return None;
    }
    let Some(allowed) = may_use(from) else {
        return Some(format!(
            "module `{from}` is not in the layer table of tests/layers.rs"
        ));
    };
    if may_use(to).is_none() {
        return Some(format!(
            "`{from}` uses `{to}`, which the layer table does not know"
        ));
    }
    (!allowed.contains(&to)).then(|| format!("`{from}` uses `{to}`"))
}

fn visit(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("read src/").path();
        if path.is_dir() {
            visit(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn imports_follow_the_layer_table() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .expect("a file under src/")
            .to_string_lossy()
            .replace('\\', "/");
        let from = rel.split(['/', '.']).next().unwrap_or_default().to_owned();
        if from == "lib" {
            continue;
        }
        if may_use(&from).is_none() {
            violations.push(format!(
                "src/{rel}: module `{from}` is not in the layer table"
            ));
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let to: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    !to.is_empty(),
                    "src/{rel}:{}: write one `crate::module::…` path per use, so this check can read it",
                    n + 1
                );
                if let Some(why) = violation(&from, &to) {
                    violations.push(format!("src/{rel}:{}: {why}", n + 1));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports that break the layer table:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_table_refuses_what_design_forbids() {
    for (from, to) in [
        ("transport", "protocol"),
        ("protocol", "transport"),
        ("entry", "transport"),
        ("bootstrap", "hub"),
        ("hub", "process"),
        ("start", "process"),
        ("queue", "start"),
        ("queue", "pool"),
        ("pool", "queue"),
        ("connection", "process"),
    ] {
        assert!(
            violation(from, to).is_some(),
            "{from} -> {to} should be refused"
        );
    }
    for (from, to) in [
        ("process", "start"),
        ("bootstrap", "entry"),
        ("pool", "hub"),
        ("queue", "hub"),
        ("protocol", "buffers"),
        ("launch", "pool"),
    ] {
        assert!(
            violation(from, to).is_none(),
            "{from} -> {to} should be allowed"
        );
    }
    assert!(violation("newthing", "error").is_some());
    assert!(violation("pool", "newthing").is_some());
}
