//! Has a file changed since it was last read? Used by everything that follows a file without a
//! restart: the JWT keys and OAuth1 secrets (`auth::follow`) and the Vault token file.

use std::path::Path;

/// Identity, size and times of a file: a change in any means "read it again". A Kubernetes
/// Secret update (a symlink swap), an atomic rename and an edit in place all change it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// `None` when the file cannot be stat'ed (missing, no permission).
    pub(crate) fn of(file: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(file).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}
