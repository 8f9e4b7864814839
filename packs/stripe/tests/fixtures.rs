//! Runs every fixture in `fixtures/` through the pack's hooks, as the agent would.

use std::path::Path;

use taskless_pack_test::{PackUnderTest, check_fixture_dir};

fn pack() -> PackUnderTest {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    PackUnderTest::load(
        dir.join("manifest.json"),
        Some(pack_stripe::pre),
        None,
        Some(pack_stripe::post),
    )
    .expect("manifest loads")
}

#[test]
fn every_fixture_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let checked = check_fixture_dir(&pack(), &dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(checked.len() >= 3, "success and error fixtures are present");
}
