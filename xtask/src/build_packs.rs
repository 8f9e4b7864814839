//! `cargo xtask build-packs`: builds the packs in `packs/` for `wasm32-unknown-unknown`,
//! shrinks them with `wasm-opt -Oz` when it is available, and lays each one out as the agent
//! loads it: `<out_dir>/<name>@<version>/{manifest.json, config.json, pack.wasm}`.
//!
//! A pack is a folder of `packs/` holding a `manifest.json` and a `Cargo.toml` whose library is
//! named `pack_<folder>` (dashes become underscores); its Wasm file is
//! `packs/target/wasm32-unknown-unknown/<profile>/pack_<folder>.wasm`, where the profile is
//! `release` (built for size) or, for the packs in [`SPEED_PACKS`], `speed`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The Wasm target every pack is built for (no WASI: packs get no clock, files or network).
const TARGET: &str = "wasm32-unknown-unknown";

/// Environment variable naming a `wasm-opt` binary to use.
pub const WASM_OPT_ENV: &str = "WASM_OPT";

/// Where the project's setup step installs binaryen from the npm registry
/// (`npm install --prefix target/tools binaryen`), relative to the repository root.
pub const TOOLS_WASM_OPT: &str = "target/tools/node_modules/.bin/wasm-opt";

/// The size every optimised pack must stay under (bytes), unless [`SIZE_BUDGETS`] says otherwise.
pub const SIZE_BUDGET: usize = 150_000;

/// Packs with a budget of their own: `pii` carries a regular-expression compiler and lazy DFA
/// engine (`regex-automata`) for its configurable patterns.
pub const SIZE_BUDGETS: &[(&str, usize)] = &[("pii", 512_000)];

/// Packs built with the `speed` profile of `packs/Cargo.toml` (everything linked into them
/// optimised for speed rather than size): `core` runs on every exchange, `pii` reads every byte
/// it checks. Each stays within its size budget.
pub const SPEED_PACKS: &[&str] = &["core", "pii"];

/// The cargo profile a pack in folder `folder` is built with, and so its output folder.
pub fn profile(folder: &str) -> &'static str {
    if SPEED_PACKS.contains(&folder) {
        "speed"
    } else {
        "release"
    }
}

/// The size budget of the pack in folder `folder` of `packs/`.
pub fn size_budget(folder: &str) -> usize {
    SIZE_BUDGETS
        .iter()
        .find(|(name, _)| *name == folder)
        .map_or(SIZE_BUDGET, |(_, budget)| *budget)
}

/// How to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The `wasm-opt` to run. `None` looks for one (see [`find_wasm_opt`]).
    pub wasm_opt: Option<PathBuf>,
}

/// Builds every pack into `out_dir` and returns the pack folders written, sorted. `wasm-opt`
/// is looked for as [`find_wasm_opt`] describes when not given; without one the packs are copied
/// as cargo built them and a note is printed.
pub fn build_packs_with(
    repo_root: &Path,
    out_dir: &Path,
    options: &BuildOptions,
) -> Result<Vec<PathBuf>> {
    let packs_dir = repo_root.join("packs");
    let target_dir = packs_dir.join("target");
    let cargo = || {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.current_dir(&packs_dir)
            .args(["build", "--target", TARGET, "--target-dir"])
            .arg(&target_dir);
        cmd
    };
    let status = cargo()
        .arg("--release")
        .status()
        .with_context(|| format!("running cargo build in {}", packs_dir.display()))?;
    if !status.success() {
        bail!("building the packs failed ({status})");
    }
    let mut speed = cargo();
    speed.args(["--profile", "speed"]);
    for folder in SPEED_PACKS {
        speed.args(["-p", &format!("taskless-pack-{folder}")]);
    }
    let status = speed
        .status()
        .with_context(|| format!("running cargo build in {}", packs_dir.display()))?;
    if !status.success() {
        bail!("building the packs {SPEED_PACKS:?} for speed failed ({status})");
    }

    let wasm_opt = options
        .wasm_opt
        .clone()
        .or_else(|| find_wasm_opt(repo_root));
    if wasm_opt.is_none() {
        eprintln!(
            "note: wasm-opt not found (set {WASM_OPT_ENV} or install binaryen into target/tools); packs are not size-optimised"
        );
    }

    let built = target_dir.join(TARGET);
    let mut written = Vec::new();
    let mut over_budget = Vec::new();
    for pack in pack_folders(&packs_dir)? {
        let folder = pack
            .file_name()
            .and_then(|n| n.to_str())
            .context("pack folder name is not UTF-8")?;
        let wasm = built
            .join(profile(folder))
            .join(format!("pack_{}.wasm", folder.replace('-', "_")));
        if !wasm.is_file() {
            bail!(
                "{} has a manifest but cargo built no {}",
                pack.display(),
                wasm.display()
            );
        }
        let manifest = std::fs::read(pack.join("manifest.json"))
            .with_context(|| format!("reading {}/manifest.json", pack.display()))?;
        let wasm_bytes = match &wasm_opt {
            Some(tool) => optimise(tool, &wasm)?,
            None => std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?,
        };
        let dir = write_pack(out_dir, &manifest, &wasm_bytes, &format!("packs/{folder}"))?;
        let budget = size_budget(folder);
        eprintln!(
            "{}: {} bytes (budget {budget})",
            dir.display(),
            wasm_bytes.len()
        );
        // Without wasm-opt the modules are larger than what ships: only optimised ones count.
        if wasm_opt.is_some() && wasm_bytes.len() > budget {
            over_budget.push(format!(
                "{folder} is {} bytes, over its {budget}-byte size budget",
                wasm_bytes.len()
            ));
        }
        written.push(dir);
    }
    if written.is_empty() {
        bail!("no packs found in {}", packs_dir.display());
    }
    if !over_budget.is_empty() {
        bail!("{}", over_budget.join("; "));
    }
    written.sort();
    Ok(written)
}

/// The `wasm-opt` to use: `$WASM_OPT`, else the one the setup step installs under
/// `target/tools`, else `wasm-opt` on `PATH`; `None` when there is none.
pub fn find_wasm_opt(repo_root: &Path) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(WASM_OPT_ENV).map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    let tools = repo_root.join(TOOLS_WASM_OPT);
    if tools.is_file() {
        return Some(tools);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("wasm-opt"))
            .find(|candidate| candidate.is_file())
    })
}

/// Folders of `packs_dir` that hold both a `manifest.json` and a `Cargo.toml`, sorted.
fn pack_folders(packs_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut folders = Vec::new();
    for entry in
        std::fs::read_dir(packs_dir).with_context(|| format!("listing {}", packs_dir.display()))?
    {
        let path = entry?.path();
        if path.join("manifest.json").is_file() && path.join("Cargo.toml").is_file() {
            folders.push(path);
        }
    }
    folders.sort();
    Ok(folders)
}

/// The Wasm features rustc enables by default for `wasm32-unknown-unknown`, and SIMD, which
/// `packs/.cargo/config.toml` enables. The release profile strips the `target_features`
/// section, so `wasm-opt` is told them.
const WASM_FEATURES: &[&str] = &[
    "--enable-simd",
    "--enable-bulk-memory",
    "--enable-bulk-memory-opt",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-reference-types",
    "--enable-multivalue",
];

/// Runs `wasm-opt -Oz` on `wasm` and returns the optimised module.
fn optimise(tool: &Path, wasm: &Path) -> Result<Vec<u8>> {
    let out = wasm.with_extension("opt.wasm");
    let status = Command::new(tool)
        .arg("-Oz")
        .args(WASM_FEATURES)
        .arg(wasm)
        .arg("-o")
        .arg(&out)
        .status()
        .with_context(|| format!("running {}", tool.display()))?;
    if !status.success() {
        bail!("{} failed on {} ({status})", tool.display(), wasm.display());
    }
    std::fs::read(&out).with_context(|| format!("reading {}", out.display()))
}

/// Writes one pack as `<out_dir>/<name>@<version>/` with its manifest, the module, and a
/// `config.json` whose `url.signature` is the SHA-256 of the module. Returns the folder.
fn write_pack(out_dir: &Path, manifest: &[u8], wasm: &[u8], source: &str) -> Result<PathBuf> {
    let parsed: serde_json::Value =
        serde_json::from_slice(manifest).context("manifest.json is not JSON")?;
    let name = parsed["name"]
        .as_str()
        .filter(|n| is_safe_name(n))
        .context("manifest has no usable name")?;
    let version = parsed["version"]
        .as_str()
        .filter(|v| is_safe_name(v) && !v.contains('/'))
        .context("manifest has no usable version")?;
    let dir = out_dir.join(format!("{name}@{version}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = serde_json::json!({
        "url": {"source": source, "signature": sha256_hex(wasm)},
        "configuration": {},
    });
    let files: [(&str, Vec<u8>); 3] = [
        ("manifest.json", manifest.to_vec()),
        ("config.json", serde_json::to_vec_pretty(&config)?),
        ("pack.wasm", wasm.to_vec()),
    ];
    for (file, bytes) in files {
        std::fs::write(dir.join(file), bytes)
            .with_context(|| format!("writing {}/{file}", dir.display()))?;
    }
    Ok(dir)
}

/// A name or version that stays inside the output folder: no `..`, no absolute path, no
/// backslash; one `@scope/` level is allowed.
fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.contains('\\')
        && !s.starts_with('/')
        && s.split('/').count() <= 2
        && s.split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Lower-case hex SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("build-packs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_pack_is_laid_out_with_a_signed_config() -> Result<()> {
        let out = temp_dir("layout");
        let manifest = br#"{"schema":"pre2","name":"stripe","version":"0.1.0"}"#;
        let dir = write_pack(&out, manifest, b"\0asm\x01\0\0\0", "packs/stripe")?;
        assert_eq!(dir, out.join("stripe@0.1.0"));
        assert_eq!(std::fs::read(dir.join("manifest.json"))?, manifest);
        assert_eq!(std::fs::read(dir.join("pack.wasm"))?, b"\0asm\x01\0\0\0");
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
        assert_eq!(config["url"]["source"], "packs/stripe");
        assert_eq!(config["url"]["signature"].as_str().map(str::len), Some(64));
        assert_eq!(config["url"]["signature"], sha256_hex(b"\0asm\x01\0\0\0"));
        assert_eq!(config["configuration"], serde_json::json!({}));
        std::fs::remove_dir_all(&out)?;
        Ok(())
    }

    #[test]
    fn core_and_pii_are_built_for_speed_and_the_others_for_size() {
        assert_eq!(profile("core"), "speed");
        assert_eq!(profile("pii"), "speed");
        assert_eq!(profile("openai"), "release");
    }

    #[test]
    fn pii_has_its_own_size_budget_and_the_others_share_one() {
        assert_eq!(size_budget("pii"), 512_000);
        for pack in ["core", "stripe", "openai", "anthropic", "github", "twilio"] {
            assert_eq!(size_budget(pack), SIZE_BUDGET, "{pack}");
        }
    }

    #[test]
    fn sha256_matches_a_known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn scoped_names_nest_one_level_and_escapes_are_refused() -> Result<()> {
        let out = temp_dir("names");
        let dir = write_pack(
            &out,
            br#"{"name":"@acme/billing","version":"1.2.3"}"#,
            b"w",
            "x",
        )?;
        assert_eq!(dir, out.join("@acme").join("billing@1.2.3"));
        for bad in [
            r#"{"name":"../x","version":"1"}"#,
            r#"{"name":"/x","version":"1"}"#,
            r#"{"name":"a","version":"../1"}"#,
            r#"{"version":"1"}"#,
        ] {
            assert!(
                write_pack(&out, bad.as_bytes(), b"w", "x").is_err(),
                "{bad} must be refused"
            );
        }
        std::fs::remove_dir_all(&out)?;
        Ok(())
    }
}
