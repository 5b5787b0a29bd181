//! File store: the embedded default backend, one directory of 0600 JSON files.
//!
//! Layout under the store directory (dirs 0700, files 0600):
//! ```text
//! {dir}/accounts/{account}/certificates/{id}.json   StoredCertificate
//! {dir}/accounts/{account}/mappings.json            MappingDocument
//! ```
//! `{id}` is the document's `id` in decimal (no leading zeros), `{account}` its `accountId`.
//! Nothing else is read. Every other entry under the directory (a `.p12` dropped next to the
//! documents, `mapping.json`, `certificates/cert-1.json`, `certificates/01.json`, ...) gets one
//! warning naming its path, why it is not read and what to do, when [`Store::inventory`] first
//! sees it and again only when it changes (see [`SkipLog`]); names and metadata only, never
//! content. A document that is read but does not decode, or whose `id`/`accountId` disagree
//! with its path, is an error for that entry whose reason names the file and the fix (the
//! refresher logs it once).
//!
//! Writes are atomic: the new bytes go to a temp file in the target's directory (created 0600,
//! named `.{target}.{pid}.{n}.tmp`), which is fsynced, renamed over the target, and then the
//! directory is fsynced. A crash at any point leaves either the old or the new file, never a torn
//! one; a leftover temp file is ignored by every read and removed by [`FileStore::open`] once it is
//! an hour old.
//!
//! Versions come from metadata, not content, so [`Store::inventory`] costs one `stat` per entry:
//! `{len}-{mtime_nanos}-{inode}`. `get_*` takes the same metadata from the open file handle before
//! reading it, so inventory and get agree on the version of the same bytes (otherwise the
//! refresher would re-read forever). Every write makes a new inode (rename), but inode numbers are
//! reused and file mtimes only tick every few milliseconds, so two quick writes of equal length
//! could otherwise repeat an old version; each write therefore sets the new file's mtime strictly
//! later than the one it replaces. Files edited by hand in place may keep their version until
//! their length or mtime changes; write them with a rename (as editors and `mv` do).
//!
//! All file I/O runs in `spawn_blocking`; writes are serialized by one async mutex per store, which
//! also makes the compare-and-set of [`Store::put_mappings`] atomic within this process (the file
//! store is meant for one gateway process per directory).

use std::collections::HashMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    check_account, check_mapping_document, valid_account_id, Inventory, MappingDocument, Store,
    StoreError, StoreResult, StoredCertificate, Versioned,
};

const ACCOUNTS: &str = "accounts";
const CERTIFICATES: &str = "certificates";
const MAPPINGS_FILE: &str = "mappings.json";
/// Temp files older than this are leftovers of a crash and removed at open.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);
/// At most this many skipped entries are remembered (and warned about one by one); more are
/// summarised in one line.
const SKIP_LOG_CAP: usize = 1024;
/// Where a hand-written store is described.
const LAYOUT_DOC: &str = "README.md, \"File store layout\"";

/// Directory-backed [`Store`]. Cheap to share behind an `Arc`.
pub struct FileStore {
    root: Arc<PathBuf>,
    write_lock: tokio::sync::Mutex<()>,
    skipped: Arc<parking_lot::Mutex<SkipLog>>,
}

/// One entry under the store directory that the store does not read.
#[derive(Debug)]
struct Skip {
    path: PathBuf,
    /// `len-mtime-inode` of the entry (not followed if a symlink): a change warns again.
    stamp: String,
    /// Why it is not read and what to do; names only, never content.
    why: String,
}

/// The skipped entries already warned about, so that a refresh every few seconds does not
/// repeat them: keyed by path, with the stamp the entry had then. Rebuilt from each scan, so an
/// entry that goes away is forgotten (and warned about again if it comes back); bounded by
/// [`SKIP_LOG_CAP`].
#[derive(Debug, Default)]
struct SkipLog {
    warned: HashMap<PathBuf, String>,
    /// Entries over the cap at the last scan.
    unlisted: usize,
}

impl SkipLog {
    /// Warns about each entry of this scan not warned about at its current stamp, and forgets
    /// entries that are gone.
    fn report(&mut self, root: &Path, skips: Vec<Skip>) {
        let mut next = HashMap::with_capacity(skips.len().min(SKIP_LOG_CAP));
        let mut unlisted = 0;
        for skip in skips {
            if next.len() >= SKIP_LOG_CAP {
                unlisted += 1;
                continue;
            }
            if self.warned.get(&skip.path) != Some(&skip.stamp) {
                log::warn!(
                    "file store: not reading {}: {}",
                    skip.path.display(),
                    skip.why
                );
            }
            next.insert(skip.path, skip.stamp);
        }
        if unlisted > 0 && unlisted != self.unlisted {
            log::warn!(
                "file store: {unlisted} more entries under {} are not read (past the first \
                 {SKIP_LOG_CAP}, which are named one by one); the store reads only \
                 accounts/{{accountId}}/mappings.json and accounts/{{accountId}}/certificates/{{id}}.json",
                root.display()
            );
        }
        self.warned = next;
        self.unlisted = unlisted;
    }
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("root", &self.root)
            .finish()
    }
}

fn io_err(path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Creates `path` (and missing parents) with mode 0700.
fn create_dir_0700(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

impl FileStore {
    /// Opens (creating with 0700 if missing) the store directory. Refuses a path that is a
    /// symlink or not a directory. Blocking: call it at startup, not from a request path.
    pub fn open(dir: impl Into<PathBuf>) -> StoreResult<FileStore> {
        let root: PathBuf = dir.into();
        match fs::symlink_metadata(&root) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(StoreError::Other(format!(
                    "file store directory {} is a symlink; point the store at the real directory",
                    root.display()
                )));
            }
            Ok(m) if !m.is_dir() => {
                return Err(StoreError::Other(format!(
                    "file store path {} exists but is not a directory",
                    root.display()
                )));
            }
            Ok(m) => {
                let mode = m.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    let me = nix::unistd::geteuid().as_raw();
                    if m.uid() == me {
                        log::warn!(
                            "file store directory {} is accessible to group/others (mode {mode:o}); \
                             chmod 700 it",
                            root.display()
                        );
                    } else {
                        // A mounted volume's root (Kubernetes: root-owned, group fsGroup, 2775):
                        // this process cannot chmod it.
                        log::warn!(
                            "file store directory {} is accessible to group/others (mode {mode:o}) \
                             and owned by uid {}, not by this process (uid {me}), so it cannot be \
                             made private; point store.path at a subdirectory of it, which the \
                             gateway creates with mode 0700",
                            root.display(),
                            m.uid()
                        );
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_dir_0700(&root).map_err(|e| io_err(&root, e))?;
            }
            Err(e) => return Err(io_err(&root, e)),
        }
        let accounts = root.join(ACCOUNTS);
        create_dir_0700(&accounts).map_err(|e| io_err(&accounts, e))?;
        remove_stale_temp_files(&accounts);
        Ok(FileStore {
            root: Arc::new(root),
            write_lock: tokio::sync::Mutex::new(()),
            skipped: Arc::default(),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }
}

fn account_dir(root: &Path, account: &str) -> PathBuf {
    root.join(ACCOUNTS).join(account)
}

fn certificate_path(root: &Path, account: &str, id: u64) -> PathBuf {
    account_dir(root, account)
        .join(CERTIFICATES)
        .join(format!("{id}.json"))
}

fn mappings_path(root: &Path, account: &str) -> PathBuf {
    account_dir(root, account).join(MAPPINGS_FILE)
}

fn certificate_key(account: &str, id: u64) -> String {
    format!("{ACCOUNTS}/{account}/{CERTIFICATES}/{id}")
}

fn mappings_key(account: &str) -> String {
    format!("{ACCOUNTS}/{account}/mappings")
}

/// The version of a file's content; see the module doc.
fn version_of(meta: &fs::Metadata) -> String {
    let mtime_nanos = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{}-{}", meta.len(), mtime_nanos, meta.ino())
}

/// Version of the file at `path`, `None` if it does not exist.
fn current_version(path: &Path) -> io::Result<Option<String>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(version_of(&m))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a file and the version of exactly those bytes (metadata from the same handle).
fn read_versioned(path: &Path) -> io::Result<Option<(Vec<u8>, String)>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "{e}; the gateway runs as uid {}: give the file to that user with mode 0600",
                    nix::unistd::geteuid().as_raw()
                ),
            ))
        }
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut bytes)?;
    Ok(Some((bytes, version_of(&meta))))
}

/// What a certificate document holds, for error messages.
const CERTIFICATE_SHAPE: &str = "a certificate file is one JSON object with id, accountId, name, \
     displayName, p12 (the PKCS#12 in base64) and password";
/// What a mapping document holds, for error messages.
const MAPPINGS_SHAPE: &str = "mappings.json is one JSON object {\"mappings\": [...]}, each \
     mapping with id, accountId, name, serviceName, url and certificateId";

/// A parse error without the parsed text (serde's "invalid type" messages can quote values, and
/// these documents hold passwords), naming the file, what it should hold and the fix.
fn parse<T: DeserializeOwned>(key: &str, path: &Path, shape: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "JSON does not match the expected document",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        StoreError::Corrupt {
            key: key.to_owned(),
            reason: format!(
                "{what} at line {} column {} of {}; {shape} ({LAYOUT_DOC}): correct the file, \
                 or write it again through the admin API",
                e.line(),
                e.column(),
                path.display()
            ),
        }
    })
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (0700) if missing and fsyncs the parents of what it created, so a new
/// account's directories survive a crash together with the first file written into them.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    create_dir_0700(dir)?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent() {
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Replaces `path` with `bytes` atomically (see the module doc); returns the new version.
/// The caller holds the store's write lock.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<String> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("target path has no parent directory"))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("target path has no file name"))?;
    ensure_dir(dir)?;
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_temp_and_rename(&tmp, path, dir, bytes);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_temp_and_rename(tmp: &Path, path: &Path, dir: &Path, bytes: &[u8]) -> io::Result<String> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    f.write_all(bytes)?;
    // Strictly later mtime than the file being replaced, so (len, mtime, inode) never repeats
    // an earlier version of this path even when the inode number is reused.
    let previous = fs::metadata(path).ok().and_then(|m| m.modified().ok());
    let now = SystemTime::now();
    let wanted = match previous {
        Some(prev) if prev >= now => prev + Duration::from_micros(1),
        _ => now,
    };
    f.set_modified(wanted)?;
    if let Some(prev) = previous {
        // File systems with coarse timestamps may round the wanted time down to the old one.
        if f.metadata()?.modified()? <= prev {
            f.set_modified(prev + Duration::from_secs(1))?;
        }
    }
    f.sync_all()?;
    let meta = f.metadata()?;
    drop(f);
    fs::rename(tmp, path)?;
    fsync_dir(dir)?;
    Ok(version_of(&meta))
}

/// Best effort: removes temp files older than [`STALE_TEMP_AGE`] under `accounts/`.
fn remove_stale_temp_files(accounts: &Path) {
    let Ok(entries) = fs::read_dir(accounts) else {
        return;
    };
    for account in entries.flatten() {
        let dir = account.path();
        for d in [dir.clone(), dir.join(CERTIFICATES)] {
            let Ok(files) = fs::read_dir(&d) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name();
                let Some(name) = name.to_str() else { continue };
                if !is_temp_name(name) {
                    continue;
                }
                let old = file
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_TEMP_AGE);
                if old {
                    match fs::remove_file(file.path()) {
                        Ok(()) => log::info!(
                            "file store: removed leftover temp file {}",
                            file.path().display()
                        ),
                        Err(e) => log::warn!(
                            "file store: cannot remove leftover temp file {}: {e}",
                            file.path().display()
                        ),
                    }
                }
            }
        }
    }
}

fn read_dir_if_exists(dir: &Path) -> io::Result<Option<fs::ReadDir>> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(Some(rd)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Records `entry` as not read, with `why` (reason and fix).
fn skip(skips: &mut Vec<Skip>, entry: &fs::DirEntry, why: String) {
    let stamp = entry.metadata().map(|m| version_of(&m)).unwrap_or_default();
    skips.push(Skip {
        path: entry.path(),
        stamp,
        why,
    });
}

/// Whether `name` looks like a certificate or key file in a format the store does not read.
fn is_key_material_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".p12", ".pfx", ".pem", ".crt", ".cer", ".der", ".key"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

/// The id a certificate file name stands for when it is written in a form the store does not
/// read: `01.json`, `+1.json` or `1` (no `.json`).
fn near_certificate_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".json").unwrap_or(name);
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit() || b == b'+') {
        return None;
    }
    stem.parse::<u64>().ok()
}

fn key_material_why(account: &str) -> String {
    format!(
        "the store does not read PKCS#12 or PEM files: a certificate is a JSON document \
         accounts/{account}/certificates/{{id}}.json holding the PKCS#12 in base64 and its \
         password ({LAYOUT_DOC}); write one, or upload the file through the admin API \
         (POST /mtls/account/{account}/certificates/by-file), then remove this file"
    )
}

/// Why an entry in the store directory itself (other than `accounts/`) is not read.
fn root_entry_why(name: &str, is_dir: bool) -> String {
    let hint = if is_dir && valid_account_id(name) {
        format!(" (if {name} is an account, move it to accounts/{name})")
    } else {
        String::new()
    };
    format!(
        "the store reads only accounts/{{accountId}}/mappings.json and \
         accounts/{{accountId}}/certificates/{{id}}.json in this directory{hint}; \
         see {LAYOUT_DOC}, move it or remove it"
    )
}

/// Why an entry of `accounts/{account}/` (other than `mappings.json` and `certificates/`) is
/// not read.
fn account_entry_why(account: &str, name: &str, is_dir: bool) -> String {
    let lower = name.to_ascii_lowercase();
    let base = lower.strip_suffix(".json").unwrap_or(&lower);
    if base == "mapping" || base == "mappings" {
        return format!(
            "the account's mapping document must be named exactly mappings.json; rename it to \
             accounts/{account}/mappings.json"
        );
    }
    if !is_dir {
        if let Some(id) = near_certificate_name(name) {
            return format!(
                "certificate files go in the certificates/ subdirectory; move it to \
                 accounts/{account}/certificates/{id}.json"
            );
        }
        if is_key_material_name(name) {
            return key_material_why(account);
        }
    }
    format!(
        "an account directory holds only mappings.json and certificates/{{id}}.json \
         ({LAYOUT_DOC}); move or remove it"
    )
}

/// Why an entry of `accounts/{account}/certificates/` is not read.
fn certificate_entry_why(account: &str, name: &str, is_dir: bool) -> String {
    if is_dir {
        return format!(
            "a directory; accounts/{account}/certificates/ holds only files named \
             {{id}}.json ({LAYOUT_DOC}); move or remove it"
        );
    }
    if let Some(id) = near_certificate_name(name) {
        return format!(
            "a certificate file is named by its document's id in decimal with the extension \
             .json; rename it to {id}.json"
        );
    }
    if is_key_material_name(name) {
        return key_material_why(account);
    }
    let stem = name.strip_suffix(".json");
    if stem.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())) {
        return format!(
            "the id in the name is larger than the largest id ({}); a certificate file is \
             named {{id}}.json after its document's id",
            u64::MAX
        );
    }
    format!(
        "a certificate file is named {{id}}.json, {{id}} being its document's numeric id \
         (for example 1001.json); rename it, or move it out of accounts/{account}/certificates/"
    )
}

/// What the store holds, with versions; every entry it does not read goes to `skips`.
fn inventory_blocking(root: &Path, skips: &mut Vec<Skip>) -> StoreResult<Inventory> {
    let accounts_dir = root.join(ACCOUNTS);
    let mut inv = Inventory::default();
    // The store directory itself: best effort (a listing error shows up on accounts/ below).
    if let Ok(entries) = fs::read_dir(root) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == ACCOUNTS || name == "lost+found" || is_temp_name(&name) {
                continue;
            }
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let why = root_entry_why(&name, is_dir);
            skip(skips, &entry, why);
        }
    }
    let Some(accounts) = read_dir_if_exists(&accounts_dir).map_err(|e| io_err(&accounts_dir, e))?
    else {
        return Ok(inv);
    };
    for entry in accounts {
        let entry = entry.map_err(|e| io_err(&accounts_dir, e))?;
        let name = entry.file_name();
        let Some(account) = name.to_str().filter(|a| valid_account_id(a)) else {
            if !is_temp_name(&name.to_string_lossy()) {
                let why = "not a valid account id (1-64 characters from A-Z, a-z, 0-9, '-' \
                           and '_'); an account is a directory accounts/{accountId}/: rename it";
                skip(skips, &entry, why.to_owned());
            }
            continue;
        };
        let file_type = match entry.file_type() {
            Ok(t) => t,
            Err(e) => {
                skip(skips, &entry, format!("cannot tell what it is: {e}"));
                continue;
            }
        };
        if !file_type.is_dir() {
            let why = if file_type.is_symlink() {
                format!(
                    "a symbolic link; the store reads account directories only as real \
                     directories: replace the link with the directory accounts/{account}/"
                )
            } else {
                format!(
                    "not a directory; an account is a directory accounts/{account}/ holding \
                     mappings.json and certificates/{{id}}.json ({LAYOUT_DOC})"
                )
            };
            skip(skips, &entry, why);
            continue;
        }
        // What else the account directory holds: best effort, reads below report errors.
        if let Ok(files) = fs::read_dir(entry.path()) {
            for file in files.flatten() {
                let name = file.file_name();
                let name = name.to_string_lossy();
                if name == MAPPINGS_FILE || is_temp_name(&name) {
                    continue;
                }
                // certificates/ may be a symlink to a directory (it is read through it).
                let is_dir = file.path().is_dir();
                if name == CERTIFICATES && is_dir {
                    continue;
                }
                let why = account_entry_why(account, &name, is_dir);
                skip(skips, &file, why);
            }
        }
        let mappings = mappings_path(root, account);
        if let Some(v) = current_version(&mappings).map_err(|e| io_err(&mappings, e))? {
            inv.mappings.push((account.to_owned(), v));
        }
        let certs_dir = entry.path().join(CERTIFICATES);
        if certs_dir.exists() && !certs_dir.is_dir() {
            // A file named certificates: warned about above.
            continue;
        }
        let Some(certs) = read_dir_if_exists(&certs_dir).map_err(|e| io_err(&certs_dir, e))? else {
            continue;
        };
        for cert in certs {
            let cert = cert.map_err(|e| io_err(&certs_dir, e))?;
            let file_name = cert.file_name();
            let name = file_name.to_string_lossy();
            if is_temp_name(&name) {
                continue;
            }
            let is_dir = cert.file_type().map(|t| t.is_dir()).unwrap_or(false);
            // Only the canonical `{id}.json` names the file that get_certificate reads.
            let id = name
                .strip_suffix(".json")
                .and_then(|stem| stem.parse::<u64>().ok())
                .filter(|id| !is_dir && *name == format!("{id}.json"));
            let Some(id) = id else {
                let why = certificate_entry_why(account, &name, is_dir);
                skip(skips, &cert, why);
                continue;
            };
            let path = cert.path();
            // A file deleted between listing and stat is simply gone.
            if let Some(v) = current_version(&path).map_err(|e| io_err(&path, e))? {
                inv.certificates.push((account.to_owned(), id, v));
            }
        }
    }
    inv.certificates.sort();
    inv.mappings.sort();
    Ok(inv)
}

fn get_certificate_blocking(
    root: &Path,
    account: &str,
    id: u64,
) -> StoreResult<Option<Versioned<StoredCertificate>>> {
    let path = certificate_path(root, account, id);
    let Some((bytes, version)) = read_versioned(&path).map_err(|e| io_err(&path, e))? else {
        return Ok(None);
    };
    let key = certificate_key(account, id);
    let value: StoredCertificate = parse(&key, &path, CERTIFICATE_SHAPE, &bytes)?;
    if value.meta.id != id || value.meta.account_id != account {
        return Err(StoreError::Corrupt {
            key,
            reason: format!(
                "{} says account {:?} id {}, but its path says account {account:?} id {id}; \
                 a certificate is read from accounts/{{accountId}}/certificates/{{id}}.json: \
                 move the file there or correct its id and accountId",
                path.display(),
                value.meta.account_id,
                value.meta.id
            ),
        });
    }
    Ok(Some(Versioned { value, version }))
}

fn get_mappings_blocking(root: &Path, account: &str) -> StoreResult<Versioned<MappingDocument>> {
    let path = mappings_path(root, account);
    match read_versioned(&path).map_err(|e| io_err(&path, e))? {
        None => Ok(Versioned {
            value: MappingDocument::default(),
            version: String::new(),
        }),
        Some((bytes, version)) => {
            let key = mappings_key(account);
            let value: MappingDocument = parse(&key, &path, MAPPINGS_SHAPE, &bytes)?;
            // As the Vault store and every write do: an account's document holds its own only.
            if let Some((i, m)) = value
                .mappings
                .iter()
                .enumerate()
                .find(|(_, m)| m.account_id != account)
            {
                return Err(StoreError::Corrupt {
                    key,
                    reason: format!(
                        "mappings[{i}] (id {}) of {} says account {:?}; a mapping belongs in the \
                         mappings.json of its own account: move it to \
                         accounts/{{accountId}}/mappings.json or correct its accountId",
                        m.id,
                        path.display(),
                        m.account_id
                    ),
                });
            }
            Ok(Versioned { value, version })
        }
    }
}

fn to_json<T: Serialize>(key: &str, value: &T) -> StoreResult<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| StoreError::Other(format!("cannot serialize {key}: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

impl FileStore {
    /// Runs blocking file work off the runtime threads.
    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> StoreResult<T> + Send + 'static,
    {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || f(&root))
            .await
            .map_err(|e| StoreError::Other(format!("file store task failed: {e}")))?
    }
}

#[async_trait]
impl Store for FileStore {
    fn describe(&self) -> String {
        format!("file:{}", self.root.display())
    }

    async fn inventory(&self) -> StoreResult<Inventory> {
        let skipped = self.skipped.clone();
        self.blocking(move |root| {
            let mut skips = Vec::new();
            let inv = inventory_blocking(root, &mut skips)?;
            skipped.lock().report(root, skips);
            Ok(inv)
        })
        .await
    }

    async fn get_certificate(
        &self,
        account: &str,
        id: u64,
    ) -> StoreResult<Option<Versioned<StoredCertificate>>> {
        check_account(account)?;
        let account = account.to_owned();
        self.blocking(move |root| get_certificate_blocking(root, &account, id))
            .await
    }

    async fn put_certificate(&self, cert: &StoredCertificate) -> StoreResult<String> {
        let account = cert.meta.account_id.clone();
        check_account(&account)?;
        let id = cert.meta.id;
        let bytes = to_json(&certificate_key(&account, id), cert)?;
        let _guard = self.write_lock.lock().await;
        self.blocking(move |root| {
            let path = certificate_path(root, &account, id);
            write_atomic(&path, &bytes).map_err(|e| io_err(&path, e))
        })
        .await
    }

    async fn put_certificate_if(
        &self,
        cert: &StoredCertificate,
        expected: &str,
    ) -> StoreResult<String> {
        let account = cert.meta.account_id.clone();
        check_account(&account)?;
        let id = cert.meta.id;
        let key = certificate_key(&account, id);
        let bytes = to_json(&key, cert)?;
        let expected = expected.to_owned();
        // Held across the check and the write: the compare-and-set is atomic for this process
        // (replicas sharing one file store directory are not supported).
        let _guard = self.write_lock.lock().await;
        self.blocking(move |root| {
            let path = certificate_path(root, &account, id);
            let current = current_version(&path)
                .map_err(|e| io_err(&path, e))?
                .unwrap_or_default();
            if current != expected {
                return Err(StoreError::Conflict(key));
            }
            write_atomic(&path, &bytes).map_err(|e| io_err(&path, e))
        })
        .await
    }

    async fn delete_certificate(&self, account: &str, id: u64) -> StoreResult<bool> {
        check_account(account)?;
        let account = account.to_owned();
        let _guard = self.write_lock.lock().await;
        self.blocking(move |root| {
            let path = certificate_path(root, &account, id);
            match fs::remove_file(&path) {
                Ok(()) => {
                    if let Some(dir) = path.parent() {
                        fsync_dir(dir).map_err(|e| io_err(dir, e))?;
                    }
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(io_err(&path, e)),
            }
        })
        .await
    }

    async fn get_mappings(&self, account: &str) -> StoreResult<Versioned<MappingDocument>> {
        check_account(account)?;
        let account = account.to_owned();
        self.blocking(move |root| get_mappings_blocking(root, &account))
            .await
    }

    async fn put_mappings(
        &self,
        account: &str,
        doc: &MappingDocument,
        expected_version: Option<&str>,
    ) -> StoreResult<String> {
        check_mapping_document(account, doc)?;
        let key = mappings_key(account);
        let bytes = to_json(&key, doc)?;
        let account = account.to_owned();
        let expected = expected_version.map(str::to_owned);
        // Held across the check and the write: the compare-and-set is atomic for this process.
        let _guard = self.write_lock.lock().await;
        self.blocking(move |root| {
            let path = mappings_path(root, &account);
            if let Some(expected) = expected {
                let current = current_version(&path)
                    .map_err(|e| io_err(&path, e))?
                    .unwrap_or_default();
                if current != expected {
                    return Err(StoreError::Conflict(key));
                }
            }
            write_atomic(&path, &bytes).map_err(|e| io_err(&path, e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skips(names: impl IntoIterator<Item = String>, stamp: &str) -> Vec<Skip> {
        names
            .into_iter()
            .map(|n| Skip {
                path: PathBuf::from(n),
                stamp: stamp.to_owned(),
                why: "test".to_owned(),
            })
            .collect()
    }

    #[test]
    fn the_skip_log_is_bounded_and_forgets_entries_that_are_gone() {
        let mut log = SkipLog::default();
        let root = Path::new("/store");
        log.report(
            root,
            skips((0..SKIP_LOG_CAP + 10).map(|i| format!("a{i}")), "1"),
        );
        assert_eq!(log.warned.len(), SKIP_LOG_CAP);
        assert_eq!(log.unlisted, 10);
        log.report(root, skips(["b".to_owned()], "1"));
        assert_eq!(log.warned.len(), 1);
        assert_eq!(log.unlisted, 0);
        assert_eq!(
            log.warned.get(Path::new("b")).map(String::as_str),
            Some("1")
        );
        log.report(root, skips(["b".to_owned()], "2"));
        assert_eq!(
            log.warned.get(Path::new("b")).map(String::as_str),
            Some("2")
        );
    }

    #[test]
    fn names_close_to_a_certificate_file_get_the_right_name() {
        assert_eq!(near_certificate_name("01.json"), Some(1));
        assert_eq!(near_certificate_name("+7.json"), Some(7));
        assert_eq!(near_certificate_name("12"), Some(12));
        assert_eq!(near_certificate_name("cert-1.json"), None);
        assert_eq!(near_certificate_name(".json"), None);
        assert!(certificate_entry_why("a", "99999999999999999999.json", false).contains("largest"));
        assert!(account_entry_why("a", "Mappings", false).contains("mappings.json"));
        assert!(account_entry_why("a", "c.PFX", false).contains("PKCS#12"));
    }
}
