//! Values read from files that are followed without a restart: the JWT keys and the OAuth1
//! secrets.
//!
//! Each use stats the file (about a microsecond; admin requests only) and reads it again when
//! its `FileStamp` (src/file_stamp.rs) differs from the last read: a Kubernetes Secret update (a
//! symlink swap), an atomic rename or an edit in place all show. A file that no
//! longer loads (missing, half written, no usable key) is reported once as a warning naming the
//! config field, and the value read before stays in use until the file loads again.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use log::{info, warn};
use parking_lot::Mutex;

use crate::file_stamp::FileStamp;

pub(crate) type Load<T> = Box<dyn Fn() -> Result<T, String> + Send + Sync>;

struct Source<T> {
    /// The config field, e.g. `auth.jwt.jwks_file`.
    field: String,
    file: PathBuf,
    load: Load<T>,
    /// The stamp of the file when it was last read (or found unreadable).
    seen: Mutex<Option<FileStamp>>,
}

/// A value from the config itself, or from a file that is followed.
pub(crate) struct Followed<T> {
    value: ArcSwap<T>,
    source: Option<Source<T>>,
}

impl<T> std::fmt::Debug for Followed<T> {
    /// The field and file only: the value may be a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(s) => write!(f, "Followed({}: {})", s.field, s.file.display()),
            None => f.write_str("Fixed"),
        }
    }
}

impl<T> Followed<T> {
    /// A value given in the config or the environment: nothing to follow.
    pub(crate) fn fixed(value: T) -> Self {
        Followed {
            value: ArcSwap::from_pointee(value),
            source: None,
        }
    }

    /// Reads `file` with `load` now (an error fails the config) and follows it.
    pub(crate) fn file(field: String, file: PathBuf, load: Load<T>) -> Result<Self, String> {
        // Stamp first: a change between the stat and the read is seen at the next use.
        let seen = FileStamp::of(&file);
        let value = load()?;
        Ok(Followed {
            value: ArcSwap::from_pointee(value),
            source: Some(Source {
                field,
                file,
                load,
                seen: Mutex::new(seen),
            }),
        })
    }

    /// The current value, after reading the file again if it changed. Concurrent callers do not
    /// wait: one checks, the others use the value they have.
    pub(crate) fn current(&self) -> Guard<Arc<T>> {
        if let Some(s) = &self.source {
            if let Some(mut seen) = s.seen.try_lock() {
                let now = FileStamp::of(&s.file);
                if now != *seen {
                    *seen = now;
                    match (s.load)() {
                        Ok(v) => {
                            info!("{}: {} changed; read again", s.field, s.file.display());
                            self.value.store(Arc::new(v));
                        }
                        Err(e) => warn!(
                            "{e}; the value read before stays in use until {} loads again",
                            s.file.display()
                        ),
                    }
                }
            }
        }
        self.value.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_last_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("n");
        std::fs::write(&file, "1").expect("write");
        let f = file.clone();
        let followed = Followed::file(
            "x.file".into(),
            file.clone(),
            Box::new(move || {
                let s = std::fs::read_to_string(&f).map_err(|e| e.to_string())?;
                s.trim().parse::<u32>().map_err(|e| e.to_string())
            }),
        )
        .expect("loads");
        assert_eq!(**followed.current(), 1);
        std::fs::write(&file, "22").expect("write");
        assert_eq!(**followed.current(), 22);
        std::fs::write(&file, "x").expect("write");
        assert_eq!(
            **followed.current(),
            22,
            "a broken file keeps the last value"
        );
        std::fs::remove_file(&file).expect("remove");
        assert_eq!(
            **followed.current(),
            22,
            "a missing file keeps the last value"
        );
        std::fs::write(&file, "3").expect("write");
        assert_eq!(**followed.current(), 3);
        assert_eq!(**Followed::fixed(7).current(), 7);
    }
}
