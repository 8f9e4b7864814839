//! Loading the pack directory again over a running set.

mod support;

use serde_json::json;
use support::{Exchange, captures, config, manifest, module, write_pack};
use taskless_pack_runtime::{PackSet, RuntimeConfig, Session};

fn marker(version: u32) -> Vec<u8> {
    module(&[("pre", captures(json!({ "version": version })))])
}

fn version(set: &PackSet) -> Option<String> {
    let mut worker = set.worker().expect("worker");
    let ex = Exchange::new("api.stripe.com", "/v1/charges");
    let line = Session::start(&mut worker, &ex.request_before_response()).into_line();
    line.dimensions
        .iter()
        .find(|d| d.name == "marker/version")
        .map(|d| d.value.clone())
}

#[test]
fn a_reload_reports_what_changed_and_a_broken_pack_keeps_its_previous_version() {
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = RuntimeConfig::default();
    let dir = write_pack(
        root.path(),
        "marker@1.0.0",
        &manifest("marker", Some(&["pre"])),
        &config(),
        &marker(1),
    );
    let (set, refused) = PackSet::load_dir(root.path(), &cfg).expect("dir usable");
    assert!(refused.is_empty());
    assert_eq!(version(&set).as_deref(), Some("1"));

    // Nothing changed: no new set.
    let r = set.reload(root.path(), &cfg).expect("reload");
    assert!(!r.changed_anything(), "{r:?}");

    // The module replaced in place.
    std::fs::write(dir.join("pack.wasm"), marker(2)).expect("write");
    let r = set.reload(root.path(), &cfg).expect("reload");
    assert_eq!(r.changed, vec!["marker@1.0.0".to_owned()], "{r:?}");
    let set = r.set.expect("a new set");
    assert_eq!(version(&set).as_deref(), Some("2"));
    assert_eq!(
        set.stats()[0].calls,
        2,
        "counters carry over: {:?}",
        set.stats()
    );

    // A broken replacement: refused, and version 2 keeps running.
    std::fs::write(dir.join("pack.wasm"), b"not wasm").expect("write");
    let r = set.reload(root.path(), &cfg).expect("reload");
    assert!(!r.changed_anything(), "{r:?}");
    assert_eq!(r.refused.len(), 1, "{r:?}");
    assert_eq!(r.refused[0].1.as_deref(), Some("marker@1.0.0"));
    assert_eq!(r.refused[0].0.pack.as_deref(), Some("marker@1.0.0"));

    // Another pack added, this one removed.
    std::fs::remove_dir_all(&dir).expect("remove");
    write_pack(
        root.path(),
        "other@1.0.0",
        &manifest("other", Some(&["pre"])),
        &config(),
        &marker(3),
    );
    let r = set.reload(root.path(), &cfg).expect("reload");
    assert_eq!(r.added, vec!["other@1.0.0".to_owned()], "{r:?}");
    assert_eq!(r.removed, vec!["marker@1.0.0".to_owned()], "{r:?}");
    let set = r.set.expect("a new set");
    assert_eq!(set.packs().len(), 1);
    assert_eq!(set.packs()[0].id, "other@1.0.0");
}
