//! Rules every shipped pack's manifest follows.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use taskless_pack_kit::{DEFAULT_REDACTED_QUERY_PARAMETERS, REDACT_SETTING};

/// The folders of `packs/` that hold a pack (a `manifest.json`).
fn shipped_packs() -> Vec<PathBuf> {
    let packs = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&packs)
        .expect("packs/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("manifest.json").is_file())
        .collect();
    folders.sort();
    folders
}

#[test]
fn every_pack_declares_query_redaction_with_the_kit_default() {
    let folders = shipped_packs();
    assert!(folders.len() >= 7, "the shipped packs: {folders:?}");
    for folder in folders {
        let path = folder.join("manifest.json");
        let manifest: Value = serde_json::from_str(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let field = manifest["fields"]
            .as_array()
            .and_then(|fields| fields.iter().find(|f| f["name"] == REDACT_SETTING));
        let Some(field) = field else {
            panic!("{} has no {REDACT_SETTING} field", path.display());
        };
        assert_eq!(field["type"], "string[]", "{}", path.display());
        assert_eq!(
            field["default"],
            json!(DEFAULT_REDACTED_QUERY_PARAMETERS),
            "{}: the default must be the kit's list",
            path.display()
        );
    }
}
