//! Test helpers: the shared vectors (workloads/riskd/vectors.json).

use serde_json::Value;

use crate::engine::Params;

/// Decodes a hex string.
pub fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// The shared vectors, read at test time from beside this crate.
pub fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../vectors.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).expect("vectors.json is JSON")
}

/// The server flags the vectors were generated with.
pub fn vector_params(v: &Value) -> Params {
    let flag = |name: &str| v["flags"][name].as_u64().expect("numeric flag");
    Params {
        accounts: flag("accounts"),
        window: usize::try_from(flag("window")).expect("window fits usize"),
        merchants: flag("merchants"),
        rules: u32::try_from(flag("rules")).expect("rules fits u32"),
        seed: flag("seed"),
    }
}
