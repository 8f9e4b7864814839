//! Every fixture shipped with every pack passes `taskless-agent pack check` against the built
//! pack (what `cargo xtask build-packs` writes), as a user would run it.

use std::{path::PathBuf, process::Command};

use taskless_e2e::harness::{agent_bin, packs_dir};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

#[test]
fn every_shipped_fixture_passes_pack_check() {
    let built = packs_dir();
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut folders: Vec<_> = std::fs::read_dir(repo_root().join("packs"))
        .expect("packs/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("manifest.json").is_file())
        .collect();
    folders.sort();
    assert!(
        folders.len() >= 7,
        "expected the seven shipped packs, found {folders:?}"
    );
    for folder in folders {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).expect("manifest"))
                .expect("manifest JSON");
        let id = format!(
            "{}@{}",
            manifest["name"].as_str().expect("name"),
            manifest["version"].as_str().expect("version")
        );
        let pack = built.join(&id);
        assert!(
            pack.join("pack.wasm").is_file(),
            "{id} is not built in {}: run `cargo xtask build-packs`",
            built.display()
        );
        let mut fixtures: Vec<_> = std::fs::read_dir(folder.join("fixtures"))
            .unwrap_or_else(|e| panic!("{id} has no fixtures: {e}"))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        fixtures.sort();
        assert!(!fixtures.is_empty(), "{id} has no fixtures");
        for fixture in fixtures {
            let out = Command::new(agent_bin())
                .args(["pack", "check", "--fixture"])
                .arg(&fixture)
                .arg("--manifest")
                .arg(pack.join("manifest.json"))
                .arg("--wasm")
                .arg(pack.join("pack.wasm"))
                .output()
                .expect("run pack check");
            checked += 1;
            if !out.status.success() {
                failures.push(format!(
                    "{}:\n{}{}",
                    fixture.display(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} fixtures failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 50, "only {checked} fixtures checked");
}
