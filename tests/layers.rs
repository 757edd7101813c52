//! Architecture check: every `crate::` path in `src/` points down the layers of DESIGN §3.
//!
//! A module may use only modules of lower layers; the two same-layer pairs DESIGN allows are
//! `process → start` and `bootstrap → entry`. `lib.rs` (re-exports) and doc comments are exempt.

use std::path::Path;

fn layer(module: &str) -> Option<u32> {
    Some(match module {
        "error" => 0,
        "transport" => 1,
        "protocol" => 2,
        "entry" | "bootstrap" => 3,
        "hub" => 4,
        "start" | "process" => 5,
        "pool" | "connection" => 6,
        "launch" => 7,
        _ => return None,
    })
}

fn allowed(from: &str, to: &str) -> bool {
    if from == to || matches!((from, to), ("process", "start") | ("bootstrap", "entry")) {
        return true;
    }
    match (layer(from), layer(to)) {
        (Some(a), Some(b)) => b < a,
        _ => true,
    }
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn imports_point_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let from = rel.split(['/', '.']).next().unwrap().to_owned();
        if from == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
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
                assert!(!to.is_empty(), "src/{rel}:{}: write one `crate::module::…` path per use, so this check can read it", n + 1);
                if !allowed(&from, &to) {
                    violations.push(format!("src/{rel}:{}: `{from}` uses `{to}`", n + 1));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports that run up the layers:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_catches_an_upward_import() {
    assert!(!allowed("transport", "protocol"));
    assert!(!allowed("hub", "process"));
    assert!(!allowed("start", "process"));
    assert!(allowed("process", "start"));
    assert!(allowed("pool", "hub"));
}
