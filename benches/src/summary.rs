//! The benchmark summary file named by `TRACER_BENCH_SUMMARY`:
//! `{"benchmarks": [{"name": .., "ns_per_conn": .., ...}, ...]}`. Each benchmark replaces its
//! own rows (by `name`) with a read-modify-write, creating the file if absent. [`Row`] is the
//! state-pipeline benchmark's row; [`upsert_fields`] writes a row of any other shape.

use std::{io, path::Path};

use serde_json::{Map, Value, json};

/// Environment variable holding the summary path.
pub const SUMMARY_ENV: &str = "TRACER_BENCH_SUMMARY";

/// One row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// e.g. `get_delta/100k_active/3_clients`.
    pub name: String,
    /// Mean ns per connection per client call.
    pub ns_per_conn: f64,
    /// Mean ns per connection of the floor measured in the same run.
    pub floor_ns_per_conn: f64,
    /// `ns_per_conn / floor_ns_per_conn`.
    pub ratio: f64,
    /// Per-client state in bytes per tracked connection.
    pub bytes_per_conn: f64,
}

/// Rounds to 3 decimals, as every number in the summary is.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A summary number: `x` rounded to 3 decimals (`null` when not finite).
pub fn number(x: f64) -> Value {
    json!(round3(x))
}

/// Replaces `row` (by name) in the summary at `path`, creating the file if needed.
pub fn upsert(path: &Path, row: &Row) -> io::Result<()> {
    upsert_fields(
        path,
        &row.name,
        [
            ("ns_per_conn", number(row.ns_per_conn)),
            ("floor_ns_per_conn", number(row.floor_ns_per_conn)),
            ("ratio", number(row.ratio)),
            ("bytes_per_conn", number(row.bytes_per_conn)),
        ],
    )
}

/// Replaces the row named `name` in the summary at `path` with `{"name": name, fields...}`,
/// creating the file if needed.
pub fn upsert_fields<'a>(
    path: &Path,
    name: &str,
    fields: impl IntoIterator<Item = (&'a str, Value)>,
) -> io::Result<()> {
    let mut root = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str::<Value>(&text).unwrap_or_else(|_| json!({})),
        Err(err) if err.kind() == io::ErrorKind::NotFound => json!({}),
        Err(err) => return Err(err),
    };
    if !root.is_object() {
        root = json!({});
    }
    let object = root.as_object_mut().map(std::mem::take).unwrap_or_default();
    let mut object: Map<String, Value> = object;
    let mut rows: Vec<Value> = match object.remove("benchmarks") {
        Some(Value::Array(rows)) => rows,
        _ => Vec::new(),
    };
    rows.retain(|r| r.get("name").and_then(Value::as_str) != Some(name));
    let mut row = Map::new();
    row.insert("name".into(), Value::from(name));
    for (key, value) in fields {
        row.insert(key.into(), value);
    }
    rows.push(Value::Object(row));
    object.insert("benchmarks".into(), Value::Array(rows));
    let text = serde_json::to_string_pretty(&Value::Object(object)).map_err(io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// [`upsert`] into the file named by [`SUMMARY_ENV`], if set.
pub fn upsert_from_env(row: &Row) -> io::Result<()> {
    match std::env::var_os(SUMMARY_ENV) {
        Some(path) => upsert(Path::new(&path), row),
        None => Ok(()),
    }
}

/// [`upsert_fields`] into the file named by [`SUMMARY_ENV`], if set.
pub fn upsert_fields_from_env<'a>(
    name: &str,
    fields: impl IntoIterator<Item = (&'a str, Value)>,
) -> io::Result<()> {
    match std::env::var_os(SUMMARY_ENV) {
        Some(path) => upsert_fields(Path::new(&path), name, fields),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, ns: f64) -> Row {
        Row {
            name: name.into(),
            ns_per_conn: ns,
            floor_ns_per_conn: 1.0,
            ratio: ns,
            bytes_per_conn: 64.0,
        }
    }

    #[test]
    fn upsert_creates_the_file_and_replaces_rows_by_name() {
        let path = std::env::temp_dir().join(format!("bench-summary-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&path);
        upsert(&path, &row("a", 1.0)).unwrap();
        upsert(&path, &row("b", 2.0)).unwrap();
        upsert(&path, &row("a", 3.0)).unwrap();
        let value: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        let rows = value["benchmarks"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["name"], "b");
        assert_eq!(rows[1]["ns_per_conn"], 3.0);
    }

    #[test]
    fn rows_of_other_shapes_keep_their_fields() {
        let path = std::env::temp_dir().join(format!("bench-fields-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&path);
        upsert(&path, &row("a", 1.0)).unwrap();
        let fields = [("ns_added", number(12.34567)), ("batched", json!(true))];
        upsert_fields(&path, "overhead/x/y", fields).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        let rows = value["benchmarks"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["name"], "overhead/x/y");
        assert_eq!(rows[1]["ns_added"], 12.346);
        assert_eq!(rows[1]["batched"], true);
    }
}
