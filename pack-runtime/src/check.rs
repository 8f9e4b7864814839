//! Offline tools: the Taskless fixture check (`pack check`) and the pack listing (`pack list`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::RuntimeConfig;
use crate::error::{PackLoadError, RuntimeError};
use crate::input::{RequestView, ResponseView, Timing};
use crate::loader;
use crate::output::OutputLine;
use crate::pack::PackInfo;
use crate::packset::PackSet;
use crate::session::Session;
use crate::stats::PackStats;

/// A Taskless fixture file.
#[derive(Debug, Clone, Deserialize)]
pub struct Fixture {
    /// The request to replay.
    pub request: FixtureRequest,
    /// The response to replay.
    pub response: FixtureResponse,
    /// JSONPath tests over the array of NDJSON lines.
    #[serde(default)]
    pub tests: Vec<FixtureTest>,
}

/// The request of a fixture.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureRequest {
    /// Method, e.g. `POST`.
    pub method: String,
    /// Full URL.
    pub url: String,
    /// Header pairs.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Body: a string is sent as is, anything else as its JSON text.
    #[serde(default)]
    pub body: Option<Value>,
}

/// The response of a fixture.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureResponse {
    /// Status code.
    pub status: u16,
    /// Reason phrase (not given to packs).
    #[serde(default, rename = "statusText")]
    pub status_text: Option<String>,
    /// Header pairs.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Body: a string is sent as is, anything else as its JSON text.
    #[serde(default)]
    pub body: Option<Value>,
}

/// One fixture test.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureTest {
    /// Test name.
    pub name: String,
    /// JSONPath; the test passes when it selects at least one node.
    pub test: String,
}

/// The result of one fixture test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestResult {
    /// Test name.
    pub name: String,
    /// The JSONPath.
    pub test: String,
    /// Whether it selected at least one node.
    pub passed: bool,
    /// Why it could not run (an invalid JSONPath), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `pack check` reports.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// `name@version` of the pack.
    pub pack: String,
    /// The NDJSON lines the fixture produced (one).
    pub lines: Vec<OutputLine>,
    /// One result per test, in fixture order.
    pub results: Vec<TestResult>,
    /// The pack's counters after the run (failed calls show up here).
    pub stats: PackStats,
}

impl CheckReport {
    /// Whether every test passed (and there was at least one).
    #[must_use]
    pub fn passed(&self) -> bool {
        !self.results.is_empty() && self.results.iter().all(|r| r.passed)
    }
}

/// Why a fixture check could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The fixture file is missing or not a valid fixture.
    #[error("fixture {path}: {message}")]
    Fixture {
        /// The fixture path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The pack could not be loaded.
    #[error(transparent)]
    Pack(#[from] PackLoadError),
    /// The runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Runs the pack (`manifest` with `config.json` beside it if there is one, and `wasm`) over the
/// fixture's exchange — `pre`, the response body as one `chunk`, the closing `chunk`, `post` —
/// and evaluates the fixture's tests over the resulting array of NDJSON lines.
pub fn check_fixture(
    fixture: &Path,
    manifest_path: &Path,
    wasm: &Path,
    config: &RuntimeConfig,
) -> Result<CheckReport, CheckError> {
    let fixture_err = |message: String| CheckError::Fixture {
        path: fixture.to_path_buf(),
        message,
    };
    let text = std::fs::read(fixture).map_err(|e| fixture_err(e.to_string()))?;
    let fx: Fixture = serde_json::from_slice(&text).map_err(|e| fixture_err(e.to_string()))?;

    let cache = config
        .cache_dir
        .as_deref()
        .map(loader::prepare_cache)
        .transpose()?;
    let files = loader::PackFiles {
        manifest: manifest_path,
        wasm,
        config_optional: true,
    };
    let loaded = loader::load_files(&files, config, cache.as_deref(), &mut BTreeSet::new())?;
    let id = loaded.def.info.id.clone();
    let set = PackSet::from_loaded(vec![loaded], config, cache, None);
    let line = run_fixture(&set, &fx)?;
    let lines = vec![line];
    let doc = serde_json::to_value(&lines).unwrap_or(Value::Null);
    let results = fx.tests.iter().map(|t| evaluate(t, &doc)).collect();
    let stats = set.stats().into_iter().next().unwrap_or(PackStats {
        pack: id.clone(),
        calls: 0,
        skipped_domain: 0,
        skipped_shed: 0,
        failures: Vec::new(),
        instances_recreated: 0,
        call_time: None,
    });
    Ok(CheckReport {
        pack: id,
        lines,
        results,
        stats,
    })
}

fn evaluate(t: &FixtureTest, doc: &Value) -> TestResult {
    match serde_json_path::JsonPath::parse(&t.test) {
        Ok(path) => TestResult {
            name: t.name.clone(),
            test: t.test.clone(),
            passed: !path.query(doc).is_empty(),
            error: None,
        },
        Err(e) => TestResult {
            name: t.name.clone(),
            test: t.test.clone(),
            passed: false,
            error: Some(e.to_string()),
        },
    }
}

fn body_bytes(body: Option<&Value>) -> Option<Vec<u8>> {
    match body? {
        Value::Null => None,
        Value::String(s) => Some(s.clone().into_bytes()),
        other => Some(other.to_string().into_bytes()),
    }
}

fn lower(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn run_fixture(set: &PackSet, fx: &Fixture) -> Result<OutputLine, RuntimeError> {
    let mut worker = set.worker()?;
    let url = taskless_url::RequestUrl::parse(&fx.request.url);
    let req_headers = lower(&fx.request.headers);
    let req_body = body_bytes(fx.request.body.as_ref());
    let resp_headers = lower(&fx.response.headers);
    let resp_body = body_bytes(fx.response.body.as_ref());
    let start = now_ns();
    let mut request = RequestView {
        method: &fx.request.method,
        url: &url.url,
        domain: &url.domain,
        path: &url.path,
        headers: &req_headers,
        body: req_body.as_deref(),
        timing: Timing {
            request_start_unix_ns: start,
            request_end_unix_ns: start,
            response_start_unix_ns: None,
            response_end_unix_ns: None,
        },
        // A fixture is an API call.
        role: Some("client"),
    };
    let response = ResponseView {
        status: fx.response.status,
        headers: &resp_headers,
        body: resp_body.as_deref(),
        complete: true,
    };
    let mut session = Session::start(&mut worker, &request);
    let end = now_ns();
    request.timing.response_start_unix_ns = Some(end);
    request.timing.response_end_unix_ns = Some(end);
    if let Some(b) = resp_body.as_deref() {
        session.chunk(&mut worker, &request, &response, b);
    }
    Ok(session.finish(&mut worker, &request, &response))
}

/// The result of `pack list`.
#[derive(Debug, Serialize)]
pub struct PackListing {
    /// Packs that loaded.
    pub packs: Vec<PackInfo>,
    /// Packs that were refused, with the reason.
    #[serde(serialize_with = "ser_refused")]
    pub refused: Vec<PackLoadError>,
}

fn ser_refused<S: serde::Serializer>(v: &[PackLoadError], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for e in v {
        seq.serialize_element(&serde_json::json!({
            "dir": e.dir.display().to_string(),
            "pack": e.pack,
            "reason": e.reason.to_string(),
        }))?;
    }
    seq.end()
}

/// Loads every pack below `dir` (compiling each, so a broken module shows up as refused) and
/// lists them.
pub fn list_packs(dir: &Path, config: &RuntimeConfig) -> Result<PackListing, RuntimeError> {
    let (set, refused) = PackSet::load_dir(dir, config)?;
    Ok(PackListing {
        packs: set.packs().to_vec(),
        refused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_tests_pass_only_when_they_select_something() {
        let doc =
            serde_json::json!([{"requestId": "r", "dimensions": [{"name": "p/k", "value": "v"}]}]);
        let t = |test: &str| FixtureTest {
            name: "t".into(),
            test: test.into(),
        };
        assert!(
            evaluate(
                &t("$[*].dimensions[?(@.name == 'p/k' && @.value == 'v')]"),
                &doc
            )
            .passed
        );
        assert!(
            !evaluate(
                &t("$[*].dimensions[?(@.name == 'p/k' && @.value == 'w')]"),
                &doc
            )
            .passed
        );
        let bad = evaluate(&t("$[?("), &doc);
        assert!(!bad.passed);
        assert!(bad.error.is_some());
    }
}
