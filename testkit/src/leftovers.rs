//! What a run may leave behind, for tests that assert it left nothing.

use std::path::Path;

/// Mount points at or below `root` (overlays of runs), from `/proc/self/mountinfo`.
pub fn mounts_below(root: &Path) -> Vec<String> {
    let root = root.to_str().expect("test roots are UTF-8");
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read /proc/self/mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(root))
        .collect()
}

/// Asserts that nothing is mounted below `root` and that each of `dirs` (relative to `root`)
/// is empty or absent.
pub fn assert_clean(root: &Path, dirs: &[&str]) {
    let mounts = mounts_below(root);
    assert!(mounts.is_empty(), "leftover mounts: {mounts:?}");
    for dir in dirs {
        let p = root.join(dir);
        let left: Vec<_> = std::fs::read_dir(&p)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "leftovers in {}: {left:?}", p.display());
    }
}
