//! Unpacks arbitrary bytes as a bundle (a hostile tenant's upload): it must never panic, never
//! write outside its destination, and stay within its limits.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skiff_bundle::{BundleLimits, unpack};

/// `outer/dest` in a folder of this process: anything but `dest` in `outer` escaped.
fn outer() -> &'static PathBuf {
    static OUTER: OnceLock<PathBuf> = OnceLock::new();
    OUTER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("skiff-fuzz-bundle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

const LIMITS: BundleLimits = BundleLimits::new(1 << 20, 64);

fn bytes_under(path: &std::path::Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    assert!(!meta.file_type().is_symlink(), "a symlink was created: {}", path.display());
    if meta.is_dir() {
        std::fs::read_dir(path)
            .unwrap()
            .map(|entry| bytes_under(&entry.unwrap().path()))
            .sum()
    } else {
        meta.len()
    }
}

fuzz_target!(|data: &[u8]| {
    let outer = outer();
    let dest = outer.join("dest");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir(&dest).unwrap();
    let result = unpack(data, &dest, &LIMITS);
    let escaped: Vec<_> = std::fs::read_dir(outer)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name != "dest")
        .collect();
    assert!(escaped.is_empty(), "written outside the destination: {escaped:?}");
    let written = bytes_under(&dest);
    assert!(written <= LIMITS.max_unpacked_bytes, "{written} bytes written");
    if let Ok(unpacked) = result {
        assert!(dest.join("skiff.toml").is_file());
        assert_eq!(unpacked.unpacked_bytes, written);
    }
});
