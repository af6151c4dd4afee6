//! F3: modes are exact whatever the process umask. A binary of its own, because the umask is
//! process-wide and the other test binaries run their tests in parallel threads.

mod common;

use std::os::unix::fs::MetadataExt;

use common::require_root;
use common::tarw::{Tar, apply};

#[test]
#[ignore = "needs root and scripts/test-env"]
fn f3_modes_are_exact_under_any_umask() {
    require_root();
    for umask in [0o022, 0o027, 0o077] {
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(umask));
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Tar::new();
        t.file("deeply/nested/and/implied", b"")
            .dir_mode("explicit/", 0o644)
            .dir_mode("explicit/permissions/", 0o600)
            .dir_mode("explicit/permissions/specified/", 0o400)
            .dir_mode("explicit/permissions/umask/", 0o777)
            .file_mode("explicit/permissions/umask/file", b"", 0o666);
        // A TypeDir without a trailing slash is a directory all the same (moby#53257).
        t.dir_mode("implied/dir-without-trailing-slash", 0o700);
        let result = apply(tmp.path(), &t.finish());
        rustix::process::umask(old);
        result.unwrap();
        let mode = |p: &str| {
            std::fs::symlink_metadata(tmp.path().join(p))
                .unwrap()
                .mode()
        };
        for p in ["deeply", "deeply/nested", "deeply/nested/and", "implied"] {
            assert_eq!(mode(p), 0o40755, "{p} under umask {umask:o}");
        }
        assert_eq!(mode("deeply/nested/and/implied"), 0o100644);
        assert_eq!(mode("explicit"), 0o40644);
        assert_eq!(mode("explicit/permissions"), 0o40600);
        assert_eq!(mode("explicit/permissions/specified"), 0o40400);
        assert_eq!(mode("explicit/permissions/umask"), 0o40777);
        assert_eq!(mode("explicit/permissions/umask/file"), 0o100666);
        assert_eq!(mode("implied/dir-without-trailing-slash"), 0o40700);
    }
}
