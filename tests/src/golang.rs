//! Building the Go test programs (`tests/go/*`) with every Go toolchain `cargo xtask setup`
//! installed, in three variants each. Builds are cached under the target directory by
//! toolchain, variant and source, so each program is built once per machine, not once per test.

use std::{
    hash::{Hash as _, Hasher as _},
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use anyhow::{Context as _, bail};

use crate::harness::build_dir;

/// A Go toolchain installed by setup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolchain {
    /// What `go env GOVERSION` says (`go1.21.13`).
    pub version: String,
    /// The `go` command.
    pub go: PathBuf,
}

impl Toolchain {
    /// The release number (`21` for `go1.21.13`).
    ///
    /// # Panics
    /// On a version that is not `go1.N...`.
    #[must_use]
    pub fn minor(&self) -> u32 {
        self.version
            .strip_prefix("go1.")
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("unexpected Go version {}", self.version))
    }
}

/// How a program is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `go build`: symbols and DWARF.
    Normal,
    /// `-ldflags=-s -w`: no symbol table, no DWARF.
    Stripped,
    /// `-buildmode=pie`: position independent.
    Pie,
}

impl Variant {
    /// Every variant.
    pub const ALL: [Self; 3] = [Self::Normal, Self::Stripped, Self::Pie];

    /// A short name for paths and messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Stripped => "stripped",
            Self::Pie => "pie",
        }
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            Self::Normal => &[],
            Self::Stripped => &["-ldflags=-s -w"],
            Self::Pie => &["-buildmode=pie"],
        }
    }
}

/// The list setup writes: `TASKLESS_GO_TOOLCHAINS`, or `taskless-agent-tools/go/toolchains.txt`
/// under `CARGO_HOME` (default `~/.cargo`).
fn manifest() -> PathBuf {
    std::env::var_os("TASKLESS_GO_TOOLCHAINS").map_or_else(
        || {
            std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
                .unwrap_or_default()
                .join("taskless-agent-tools/go/toolchains.txt")
        },
        PathBuf::from,
    )
}

/// Every toolchain setup installed, oldest first.
///
/// # Panics
/// When setup has not run: tests say so rather than skip.
#[must_use]
pub fn toolchains() -> Vec<Toolchain> {
    let path = manifest();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): run `cargo xtask setup` (it installs the Go toolchains)",
            path.display()
        )
    });
    let mut list: Vec<Toolchain> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(v, go)| Toolchain {
            version: v.to_owned(),
            go: PathBuf::from(go),
        })
        .collect();
    assert!(
        !list.is_empty() && list.iter().all(|t| t.go.exists()),
        "{} names missing toolchains: run `cargo xtask setup`",
        path.display()
    );
    list.sort_by_key(Toolchain::minor);
    list
}

/// The newest installed toolchain.
#[must_use]
pub fn newest() -> Toolchain {
    toolchains().pop().expect("at least one toolchain")
}

/// The source directory of test program `name` (`tests/go/<name>`).
#[must_use]
pub fn source_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("go").join(name)
}

/// The Go work directory under the target directory: build cache, module path and outputs.
fn go_home() -> PathBuf {
    build_dir()
        .parent()
        .map_or_else(|| build_dir().join("go"), |t| t.join("go"))
}

static BUILDING: Mutex<()> = Mutex::new(());

/// Builds test program `name` with `toolchain` as `variant` for x86-64, or returns the cached
/// build.
///
/// # Errors
/// When the sources cannot be read or `go build` fails.
pub fn build(toolchain: &Toolchain, name: &str, variant: Variant) -> anyhow::Result<PathBuf> {
    build_for(toolchain, name, variant, "amd64")
}

/// [`build`] for another architecture (`GOARCH`).
///
/// # Errors
/// As [`build`].
pub fn build_for(
    toolchain: &Toolchain,
    name: &str,
    variant: Variant,
    goarch: &str,
) -> anyhow::Result<PathBuf> {
    let src = source_dir(name).join("main.go");
    let source = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut hasher);
    toolchain.version.hash(&mut hasher);
    variant.hash(&mut hasher);
    goarch.hash(&mut hasher);
    let home = go_home();
    let stem = format!("{name}-{}-{}-{goarch}-", toolchain.version, variant.name());
    let out = home
        .join("bin")
        .join(format!("{stem}{:016x}", hasher.finish()));
    let _guard = BUILDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if out.exists() {
        return Ok(out);
    }
    std::fs::create_dir_all(home.join("bin"))?;
    let partial = out.with_extension("partial");
    let started = std::time::Instant::now();
    let output = Command::new(&toolchain.go)
        .arg("build")
        .args(variant.flags())
        .arg("-o")
        .arg(&partial)
        .arg(&src)
        .env("GOCACHE", home.join("cache"))
        .env("GOPATH", home.join("path"))
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOTELEMETRY", "off")
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0")
        .env("GOARCH", goarch)
        .env("GOOS", "linux")
        .env_remove("GOROOT")
        .output()
        .with_context(|| format!("running {}", toolchain.go.display()))?;
    if !output.status.success() {
        bail!(
            "{} build of {name} ({}) failed: {}",
            toolchain.version,
            variant.name(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::rename(&partial, &out)?;
    // Builds of older sources of the same program, toolchain and variant are of no more use.
    for old in std::fs::read_dir(home.join("bin"))?.filter_map(Result::ok) {
        let file = old.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&stem) && old.path() != out {
            let _ = std::fs::remove_file(old.path());
        }
    }
    eprintln!(
        "built {name} with {} ({}, {goarch}) in {:.1} s",
        toolchain.version,
        variant.name(),
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}
