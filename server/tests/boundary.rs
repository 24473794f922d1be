//! The store boundary, read from the source: the engine decides over the `Store` trait and names no store
//! (only `engine/stores.rs`, which picks one by config, does); the in-memory and Redis stores name nothing of
//! each other, except the Redis store's `local` fallback, which keeps its grants in an in-memory store
//! (`engine/redis/fallback.rs`, the one exception docs/ARCHITECTURE.md names); and the engine knows nothing
//! of gRPC or metrics.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every code line (comments and doc comments aside) of every engine file, with its path under `engine/`.
fn engine_code() -> Vec<(String, String)> {
    let engine = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let mut files = Vec::new();
    rust_files(&engine, &mut files);
    files.sort();
    let mut lines = Vec::new();
    for file in files {
        let name = file
            .strip_prefix(&engine)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let code = line.trim_start();
            if !code.starts_with("//") {
                lines.push((name.clone(), code.to_owned()));
            }
        }
    }
    lines
}

/// The lines of files matching `whose` that name any of `names`.
fn offending(whose: impl Fn(&str) -> bool, names: &[&str]) -> Vec<String> {
    engine_code()
        .into_iter()
        .filter(|(file, line)| whose(file) && names.iter().any(|n| line.contains(n)))
        .map(|(file, line)| format!("engine/{file}: {line}"))
        .collect()
}

#[test]
fn the_engine_names_no_store_but_through_stores_rs() {
    // mod.rs only declares the modules and re-exports what stores.rs exports.
    let outside = |f: &str| {
        !f.starts_with("memory/")
            && !f.starts_with("redis/")
            && !matches!(f, "stores.rs" | "mod.rs")
    };
    let found = offending(
        outside,
        &["memory::", "redis::", "MemoryStore", "RedisStore"],
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_stores_name_nothing_of_each_other() {
    let found = offending(|f| f.starts_with("memory/"), &["redis", "Redis"]);
    assert!(found.is_empty(), "{found:#?}");
    let found = offending(
        |f| f.starts_with("redis/") && f != "redis/fallback.rs",
        &["memory::", "MemoryStore"],
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_engine_knows_nothing_of_grpc_or_metrics() {
    let found = offending(
        |_| true,
        &[
            "tonic",
            "prost",
            "quotad_api",
            "crate::grpc",
            "crate::metrics",
        ],
    );
    assert!(found.is_empty(), "{found:#?}");
}
