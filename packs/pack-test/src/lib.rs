//! Runs a pack's hook functions natively over an exchange, the way the agent calls the Wasm
//! exports, and checks Taskless fixtures (`{"request", "response", "tests"}`) against the result.
//!
//! This is a test-only stand-in for `taskless-agent pack check`: it builds each hook's input
//! exactly as the pre2 contract describes (bodies only with `permissions.body`, configuration
//! from the fields' defaults, context threaded from one hook to the next, the response body fed
//! to `chunk` in pieces and once more without one), turns captures into dimensions and evaluates
//! each fixture test's JSONPath over the array of output lines. Every fixture is run with several
//! piece sizes, and all of them must give the same dimensions.

mod exchange;
mod fixture;
mod pack;

pub use exchange::{Exchange, HttpMessage};
pub use fixture::{Fixture, FixtureTest, check_fixture, check_fixture_dir};
pub use pack::{Dimension, Hook, PackUnderTest, TIMING, as_map};

/// What can go wrong while running a pack over a fixture.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not the JSON it should be.
    #[error("{path} is not valid: {source}")]
    Json {
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The manifest does not describe a runnable pack.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A test's JSONPath does not parse.
    #[error("test {name:?}: bad JSONPath {path:?}: {reason}")]
    JsonPath {
        /// The test's name.
        name: String,
        /// The expression.
        path: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A hook's input or output could not be made or read.
    #[error("hook {hook}: {reason}")]
    Hook {
        /// `pre`, `chunk` or `post`.
        hook: &'static str,
        /// Why.
        reason: String,
    },
    /// The fixture ran, and some of its tests selected nothing or results differed.
    #[error("{path}: {failures:#?}")]
    Failed {
        /// The fixture.
        path: String,
        /// One line per failed test or differing run.
        failures: Vec<String>,
    },
}
