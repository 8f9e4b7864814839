//! Taskless fixture files and their checking.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value, json};
use serde_json_path::JsonPath;

use crate::{Exchange, HarnessError, HttpMessage, PackUnderTest};

/// Piece sizes the response body is fed to `chunk` in; `None` is the whole body at once.
const PIECES: [Option<usize>; 4] = [None, Some(1), Some(7), Some(64)];

/// A Taskless fixture: one exchange and the JSONPath tests its output line must satisfy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// The request.
    pub request: HttpMessage,
    /// The response.
    pub response: HttpMessage,
    /// The tests; each passes when its JSONPath selects at least one node.
    pub tests: Vec<FixtureTest>,
}

/// One fixture test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureTest {
    /// What the test shows.
    pub name: String,
    /// A JSONPath over the array of NDJSON output lines.
    pub test: String,
}

impl Fixture {
    /// Reads a fixture file.
    pub fn read(path: &Path) -> Result<Self, HarnessError> {
        let text = std::fs::read_to_string(path).map_err(|source| HarnessError::Io {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| HarnessError::Json {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Runs `pack` over the fixture at `path` with every piece size, checks that all runs give the
/// same dimensions and that every test selects something. Returns the output line.
pub fn check_fixture(pack: &PackUnderTest, path: &Path) -> Result<Value, HarnessError> {
    let fixture = Fixture::read(path)?;
    let shown = path.display().to_string();
    if fixture.tests.is_empty() {
        return Err(HarnessError::Failed {
            path: shown,
            failures: vec!["no tests".into()],
        });
    }
    if fixture.request.method.is_empty()
        || fixture.request.url.is_empty()
        || fixture.response.status == 0
    {
        return Err(HarnessError::Failed {
            path: shown,
            failures: vec!["request needs method and url, response needs status".into()],
        });
    }
    let exchange = Exchange {
        request: fixture.request.clone(),
        response: fixture.response.clone(),
    };
    let whole = pack.run_with(&exchange, &Map::new(), None)?;
    let mut failures = Vec::new();
    for piece in PIECES.into_iter().skip(1) {
        let run = pack.run_with(&exchange, &Map::new(), piece)?;
        if run != whole {
            failures.push(format!(
                "pieces of {piece:?} bytes gave {run:?}, whole body gave {whole:?}"
            ));
        }
    }
    let line = json!({"requestId": "0190f1e2d3c4b5a69788796a5b4c3d2e", "dimensions": whole});
    let lines = Value::Array(vec![line.clone()]);
    for test in &fixture.tests {
        let path = JsonPath::parse(&test.test).map_err(|e| HarnessError::JsonPath {
            name: test.name.clone(),
            path: test.test.clone(),
            reason: e.to_string(),
        })?;
        if path.query(&lines).is_empty() {
            failures.push(format!(
                "test {:?} ({}) selected nothing in {line}",
                test.name, test.test
            ));
        }
    }
    if failures.is_empty() {
        Ok(line)
    } else {
        Err(HarnessError::Failed {
            path: shown,
            failures,
        })
    }
}

/// Checks every `*.json` fixture in `dir` (there must be at least one). Returns the files checked.
pub fn check_fixture_dir(pack: &PackUnderTest, dir: &Path) -> Result<Vec<PathBuf>, HarnessError> {
    let entries = std::fs::read_dir(dir).map_err(|source| HarnessError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(HarnessError::Failed {
            path: dir.display().to_string(),
            failures: vec!["no fixtures".into()],
        });
    }
    let mut failures = Vec::new();
    for file in &files {
        if let Err(err) = check_fixture(pack, file) {
            failures.push(err.to_string());
        }
    }
    if failures.is_empty() {
        Ok(files)
    } else {
        Err(HarnessError::Failed {
            path: dir.display().to_string(),
            failures,
        })
    }
}
