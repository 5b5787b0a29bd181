//! FileStore against real temp directories.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use mtls_gateway::store::file::FileStore;
use mtls_gateway::store::{
    CertificateMeta, CertificateSecret, Mapping, MappingDocument, Store, StoreError,
    StoredCertificate,
};

use crate::common::{raw_request, wait_for, Gw, OneMapping};

fn cert(account: &str, id: u64, p12: &[u8]) -> StoredCertificate {
    StoredCertificate {
        meta: CertificateMeta {
            id,
            account_id: account.to_owned(),
            name: format!("cert-{id}"),
            display_name: format!("Certificate {id}"),
            deleted: false,
            not_after: Some(2_000_000_000),
            updated_at: 1_700_000_000,
        },
        secret: CertificateSecret {
            p12: p12.to_vec(),
            password: "s3cret".to_owned(),
        },
        lifecycle: None,
    }
}

fn mapping(account: &str, id: u64, url: &str) -> Mapping {
    Mapping {
        id,
        account_id: account.to_owned(),
        name: format!("mapping-{id}"),
        service_name: "TEST_SERVICE".to_owned(),
        url: url.to_owned(),
        certificate_id: 7,
        enabled: true,
        deleted: false,
        cutover_check: None,
    }
}

fn doc(mappings: Vec<Mapping>) -> MappingDocument {
    MappingDocument { mappings }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn store() -> (tempfile::TempDir, FileStore) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(tmp.path().join("store")).expect("open");
    (tmp, store)
}

#[tokio::test]
async fn certificate_put_get_delete_round_trips() {
    let (_tmp, s) = store();
    let c = cert("acme", 7, b"\x30\x82binary\x00p12");
    let v = s.put_certificate(&c).await.expect("put");
    let got = s
        .get_certificate("acme", 7)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.value, c);
    assert_eq!(got.version, v);
    assert!(s.delete_certificate("acme", 7).await.expect("delete"));
    assert!(s.get_certificate("acme", 7).await.expect("get").is_none());
    assert!(!s
        .delete_certificate("acme", 7)
        .await
        .expect("second delete"));
}

#[tokio::test]
async fn mappings_round_trip_and_missing_account_is_empty_with_empty_version() {
    let (_tmp, s) = store();
    let none = s.get_mappings("nobody").await.expect("get");
    assert_eq!(none.value, MappingDocument::default());
    assert_eq!(none.version, "");
    let d = doc(vec![mapping("acme", 1, "https://api.example.com/*")]);
    let v = s.put_mappings("acme", &d, None).await.expect("put");
    let got = s.get_mappings("acme").await.expect("get");
    assert_eq!(got.value, d);
    assert_eq!(got.version, v);
}

#[tokio::test]
async fn files_are_0600_and_directories_0700() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("a").join("store");
    let s = FileStore::open(&root).expect("open");
    s.put_certificate(&cert("acme", 1, b"x"))
        .await
        .expect("put");
    s.put_mappings("acme", &doc(vec![]), None)
        .await
        .expect("put");
    for dir in [
        root.clone(),
        root.join("accounts"),
        root.join("accounts/acme"),
        root.join("accounts/acme/certificates"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for file in [
        root.join("accounts/acme/certificates/1.json"),
        root.join("accounts/acme/mappings.json"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    assert_eq!(s.describe(), format!("file:{}", root.display()));
}

#[tokio::test]
async fn version_changes_with_every_write_and_only_then() {
    let (_tmp, s) = store();
    let c = cert("acme", 1, b"aaaa");
    let v1 = s.put_certificate(&c).await.expect("put");
    let inv = s.inventory().await.expect("inventory");
    assert_eq!(inv.certificates, vec![("acme".to_owned(), 1, v1.clone())]);
    // Reading never changes the version.
    for _ in 0..3 {
        let got = s
            .get_certificate("acme", 1)
            .await
            .expect("get")
            .expect("present");
        assert_eq!(got.version, v1);
    }
    // Same-length rewrites in quick succession still get distinct versions.
    let mut seen = vec![v1];
    for p12 in [b"bbbb", b"aaaa", b"cccc", b"bbbb"] {
        let v = s.put_certificate(&cert("acme", 1, p12)).await.expect("put");
        assert!(!seen.contains(&v), "version {v} repeated");
        let inv = s.inventory().await.expect("inventory");
        assert_eq!(inv.certificates[0].2, v, "inventory and put disagree");
        let got = s
            .get_certificate("acme", 1)
            .await
            .expect("get")
            .expect("present");
        assert_eq!(got.version, v, "get and put disagree");
        assert_eq!(got.value.secret.p12, p12.to_vec());
        seen.push(v);
    }
}

#[tokio::test]
async fn inventory_lists_every_certificate_and_mapping_document() {
    let (_tmp, s) = store();
    assert_eq!(
        s.inventory().await.expect("empty inventory"),
        Default::default()
    );
    let mut expected_certs = Vec::new();
    for (account, id) in [("acme", 1u64), ("acme", 22), ("beta_2", 3)] {
        let v = s
            .put_certificate(&cert(account, id, b"p12"))
            .await
            .expect("put");
        expected_certs.push((account.to_owned(), id, v));
    }
    let va = s
        .put_mappings("acme", &doc(vec![mapping("acme", 1, "https://a/")]), None)
        .await
        .expect("put");
    let vc = s
        .put_mappings("gamma", &doc(vec![]), None)
        .await
        .expect("put");
    let inv = s.inventory().await.expect("inventory");
    expected_certs.sort();
    assert_eq!(inv.certificates, expected_certs);
    assert_eq!(
        inv.mappings,
        vec![("acme".to_owned(), va), ("gamma".to_owned(), vc)]
    );
}

#[tokio::test]
async fn put_mappings_with_a_stale_version_conflicts_and_writes_nothing() {
    let (_tmp, s) = store();
    let d1 = doc(vec![mapping("acme", 1, "https://one/")]);
    // Expecting "" means "must not exist yet".
    let v1 = s.put_mappings("acme", &d1, Some("")).await.expect("create");
    let d2 = doc(vec![mapping("acme", 2, "https://two/")]);
    let v2 = s
        .put_mappings("acme", &d2, Some(&v1))
        .await
        .expect("update");
    let d3 = doc(vec![mapping("acme", 3, "https://three/")]);
    let err = s
        .put_mappings("acme", &d3, Some(&v1))
        .await
        .expect_err("stale");
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let err = s
        .put_mappings("acme", &d3, Some(""))
        .await
        .expect_err("exists");
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let got = s.get_mappings("acme").await.expect("get");
    assert_eq!((got.value, got.version), (d2, v2));
}

#[tokio::test]
async fn concurrent_compare_and_set_lets_exactly_one_writer_win() {
    let (_tmp, s) = store();
    let s = std::sync::Arc::new(s);
    let v0 = s
        .put_mappings("acme", &doc(vec![]), None)
        .await
        .expect("put");
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let (s, v0) = (s.clone(), v0.clone());
        tasks.push(tokio::spawn(async move {
            let d = doc(vec![mapping("acme", i, "https://x/")]);
            s.put_mappings("acme", &d, Some(&v0)).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn leftover_temp_file_from_a_crash_does_not_disturb_reads() {
    let (tmp, s) = store();
    let c = cert("acme", 5, b"original");
    let v = s.put_certificate(&c).await.expect("put");
    let d = doc(vec![mapping("acme", 1, "https://a/")]);
    let vm = s.put_mappings("acme", &d, None).await.expect("put");
    // A writer that died after creating its temp file and writing half of it.
    let dir = tmp.path().join("store/accounts/acme");
    fs::write(
        dir.join("certificates/.5.json.999.0.tmp"),
        b"{\"id\": 5, \"acc",
    )
    .expect("stray");
    fs::write(dir.join(".mappings.json.999.1.tmp"), b"{\"mapp").expect("stray");
    let inv = s.inventory().await.expect("inventory");
    assert_eq!(inv.certificates, vec![("acme".to_owned(), 5, v.clone())]);
    assert_eq!(inv.mappings, vec![("acme".to_owned(), vm.clone())]);
    let got = s
        .get_certificate("acme", 5)
        .await
        .expect("get")
        .expect("present");
    assert_eq!((got.value, got.version), (c, v));
    let got = s.get_mappings("acme").await.expect("get");
    assert_eq!((got.value, got.version), (d, vm));
    // And the next write goes through (a fresh temp name, not the stray one).
    s.put_certificate(&cert("acme", 5, b"newer"))
        .await
        .expect("put after crash");
    // A reopened store keeps working with the stray files there (they are young, so kept).
    let s2 = FileStore::open(tmp.path().join("store")).expect("reopen");
    assert_eq!(
        s2.inventory().await.expect("inventory").certificates.len(),
        1
    );
}

#[tokio::test]
async fn corrupt_file_is_reported_for_that_entry_only() {
    let (tmp, s) = store();
    s.put_certificate(&cert("acme", 1, b"good"))
        .await
        .expect("put");
    s.put_certificate(&cert("acme", 2, b"good"))
        .await
        .expect("put");
    let bad = tmp.path().join("store/accounts/acme/certificates/2.json");
    fs::write(&bad, b"{\"id\": 2, \"password\": \"hunter2\", trunc").expect("corrupt");
    let inv = s.inventory().await.expect("inventory still works");
    assert_eq!(inv.certificates.len(), 2);
    assert!(s
        .get_certificate("acme", 1)
        .await
        .expect("good one")
        .is_some());
    match s.get_certificate("acme", 2).await {
        Err(StoreError::Corrupt { key, reason }) => {
            assert_eq!(key, "accounts/acme/certificates/2");
            assert!(
                !reason.contains("hunter2"),
                "reason leaks content: {reason}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Valid JSON whose secret has the wrong type: the value must not appear in the error.
    fs::write(
        &bad,
        br#"{"id":2,"accountId":"acme","name":"n","displayName":"d","p12":"","password":12345678}"#,
    )
    .expect("corrupt");
    let err = s.get_certificate("acme", 2).await.expect_err("corrupt");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(
        !err.to_string().contains("12345678"),
        "error leaks content: {err}"
    );

    let mappings = tmp.path().join("store/accounts/acme/mappings.json");
    fs::write(&mappings, b"not json").expect("corrupt");
    let err = s.get_mappings("acme").await.expect_err("corrupt");
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key == "accounts/acme/mappings"),
        "{err}"
    );
}

/// Written by hand, a mapping document could name another account in a mapping: refused when
/// read (as every write and the Vault store refuse it), naming the file and the fix.
#[tokio::test]
async fn a_mapping_document_holding_another_accounts_mapping_is_corrupt() {
    let (tmp, s) = store();
    let d = doc(vec![mapping("acme", 1, "https://a/")]);
    s.put_mappings("acme", &d, None).await.expect("put");
    let path = tmp.path().join("store/accounts/acme/mappings.json");
    let text = fs::read_to_string(&path).expect("read");
    fs::write(&path, text.replace("\"acme\"", "\"other\"")).expect("write");
    match s.get_mappings("acme").await {
        Err(StoreError::Corrupt { key, reason }) => {
            assert_eq!(key, "accounts/acme/mappings");
            assert!(
                reason.contains(&path.display().to_string()) && reason.contains("\"other\""),
                "{reason}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn certificate_stored_under_the_wrong_name_is_corrupt() {
    let (tmp, s) = store();
    s.put_certificate(&cert("acme", 1, b"p12"))
        .await
        .expect("put");
    let dir = tmp.path().join("store/accounts/acme/certificates");
    fs::copy(dir.join("1.json"), dir.join("9.json")).expect("copy");
    let err = s.get_certificate("acme", 9).await.expect_err("mismatch");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn path_traversal_account_ids_are_rejected() {
    let (tmp, s) = store();
    for bad in ["../x", "..", "a/b", "", ".hidden", "a\0b", &"x".repeat(65)] {
        assert!(s.get_certificate(bad, 1).await.is_err(), "get {bad:?}");
        assert!(s.get_mappings(bad).await.is_err(), "get mappings {bad:?}");
        assert!(
            s.delete_certificate(bad, 1).await.is_err(),
            "delete {bad:?}"
        );
        assert!(
            s.put_certificate(&cert(bad, 1, b"p")).await.is_err(),
            "put {bad:?}"
        );
        assert!(
            s.put_mappings(bad, &doc(vec![]), None).await.is_err(),
            "put mappings {bad:?}"
        );
    }
    // Nothing was written outside (or inside) the store.
    let outside: Vec<_> = fs::read_dir(tmp.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("store")]);
    assert_eq!(s.inventory().await.expect("inventory"), Default::default());
}

#[tokio::test]
async fn mapping_for_another_account_is_refused() {
    let (_tmp, s) = store();
    let d = doc(vec![mapping("other", 1, "https://a/")]);
    assert!(s.put_mappings("acme", &d, None).await.is_err());
}

#[test]
fn open_refuses_a_symlink_or_a_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let real = tmp.path().join("real");
    fs::create_dir(&real).expect("mkdir");
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let err = FileStore::open(&link).expect_err("symlink");
    assert!(err.to_string().contains("symlink"), "{err}");
    let file = tmp.path().join("file");
    fs::write(&file, b"").expect("file");
    let err = FileStore::open(&file).expect_err("file");
    assert!(err.to_string().contains("not a directory"), "{err}");
}

/// A group-writable store directory this process does not own (a Kubernetes volume's root:
/// root-owned, group fsGroup, mode 2775) cannot be made private by the gateway: the warning
/// says to use a subdirectory, as the Helm chart does, not "chmod 700". The subdirectory, made
/// by the gateway with mode 0700, draws no warning. Needs root (to give the directory another
/// owner); skipped otherwise.
#[test]
fn a_store_directory_owned_by_another_user_gets_a_warning_naming_the_subdirectory_fix() {
    if !crate::admin::capture_logs() {
        eprintln!("skipped: another logger was installed first");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let volume = tmp.path().join("volume");
    fs::create_dir(&volume).expect("mkdir");
    fs::set_permissions(&volume, fs::Permissions::from_mode(0o2775)).expect("chmod");
    let other = nix::unistd::Uid::from_raw(4242);
    if nix::unistd::chown(&volume, Some(other), None).is_err() {
        eprintln!("skipped: giving the directory another owner needs root");
        return;
    }
    FileStore::open(&volume).expect("open the volume root");
    let at = |dir: &Path| -> Vec<String> {
        let name = format!("directory {} ", dir.display());
        crate::admin::log_lines()
            .into_iter()
            .filter(|l| l.starts_with("WARN") && l.contains(&name))
            .collect()
    };
    let warned = at(&volume);
    assert!(
        warned.len() == 1
            && warned[0].contains("owned by uid 4242")
            && warned[0].contains("point store.path at a subdirectory"),
        "{warned:?}"
    );
    let store = volume.join("store");
    FileStore::open(&store).expect("open the subdirectory");
    assert_eq!(mode(&store), 0o700);
    assert!(at(&store).is_empty(), "{:?}", at(&store));
}

/// Lines of the gateway log that name `path` as a path (followed by ':' or ';' or a space).
fn lines_naming(logs: &str, path: &Path) -> Vec<String> {
    let shown = path.display().to_string();
    logs.lines()
        .filter(|l| {
            l.match_indices(&shown).any(|(i, _)| {
                matches!(
                    l[i + shown.len()..].chars().next(),
                    None | Some(':' | ';' | ' ' | ',')
                )
            })
        })
        .map(str::to_owned)
        .collect()
}

/// Waits until the gateway has finished `n` more successful refreshes.
fn wait_refreshes(gw: &Gw, n: f64) {
    let series = "mtls_gateway_refresh_duration_seconds_count{result=\"ok\"}";
    let start = gw.metric(series);
    wait_for("refreshes", Duration::from_secs(30), || {
        (gw.metric(series) >= start + n).then_some(())
    });
}

/// A store written by hand, with entries next to the good ones that the store does not read
/// (names from an older README, a PKCS#12 dropped in, a leading zero, ...): the gateway starts
/// and serves the good entries, and its log names each other entry once, with why and the fix,
/// however many refreshes run; an entry added or changed later is named once more. Documents
/// that are read but do not load name their file and the fix too. No file content is logged.
#[test]
fn entries_the_file_store_does_not_read_are_each_named_once_in_the_log() {
    let m = OneMapping::new("a");
    let store = m.seed.dir.clone();
    let acc = store.join("accounts/acc");
    let certs = acc.join("certificates");
    // Stands for a password: no line of the log may contain it.
    let secret = "pw-that-must-never-be-logged";
    let content = format!("{{\"password\": \"{secret}\"}}\n");
    fs::create_dir(store.join("acc")).expect("mkdir");
    let strays: Vec<(std::path::PathBuf, &str)> = vec![
        (
            acc.join("mapping.json"),
            "rename it to accounts/acc/mappings.json",
        ),
        (acc.join("cert-1.p12"), "does not read PKCS#12"),
        (
            acc.join("7.json"),
            "move it to accounts/acc/certificates/7.json",
        ),
        (certs.join("01.json"), "rename it to 1.json"),
        (certs.join("cert-2.json"), "named {id}.json"),
        (certs.join("5"), "rename it to 5.json"),
        (store.join("accounts/bad.name"), "not a valid account id"),
        (store.join("acc"), "move it to accounts/acc"),
    ];
    for (path, _) in &strays {
        if !path.is_dir() {
            fs::write(path, &content).expect("stray");
        }
    }
    // Read, but not loadable: bad JSON, and a document whose id disagrees with its name.
    let broken = certs.join("2.json");
    fs::write(&broken, format!("{{\"password\": \"{secret}\", trunc")).expect("broken");
    let misnamed = certs.join("3.json");
    fs::copy(certs.join("1.json"), &misnamed).expect("copy");

    let gw = Gw::start(
        m.dir.path(),
        &m.pki.ca_path,
        "refresh:\n  interval_secs: 1\n",
    );
    let port = m.port;
    let r = raw_request(
        gw.proxy,
        &format!("GET http://localhost:{port}/x HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"),
    )
    .expect("request");
    assert_eq!(r.0, 200, "the good certificate and mapping are served");
    wait_refreshes(&gw, 3.0);

    let logs = gw.logs();
    for (path, why) in &strays {
        let lines = lines_naming(&logs, path);
        assert_eq!(lines.len(), 1, "{}: {lines:#?}\n{logs}", path.display());
        assert!(
            lines[0].contains("WARN") && lines[0].contains(why),
            "{}: {lines:#?}",
            path.display()
        );
    }
    let lines = lines_naming(&logs, &broken);
    assert!(
        lines.len() == 1
            && lines[0].contains("invalid JSON")
            && lines[0].contains("correct the file"),
        "{lines:#?}"
    );
    let lines = lines_naming(&logs, &misnamed);
    assert!(
        lines.len() == 1 && lines[0].contains("move the file there or correct its id"),
        "{lines:#?}"
    );
    assert!(!logs.contains(secret), "file content in the log:\n{logs}");

    // A stray that appears while the gateway runs is named once; one that changes, once more.
    let late = acc.join("1.txt");
    fs::write(&late, &content).expect("late stray");
    fs::write(acc.join("mapping.json"), format!("{content}\n")).expect("changed stray");
    wait_refreshes(&gw, 3.0);
    let logs = gw.logs();
    assert_eq!(lines_naming(&logs, &late).len(), 1, "{logs}");
    assert_eq!(
        lines_naming(&logs, &acc.join("mapping.json")).len(),
        2,
        "{logs}"
    );
    assert_eq!(
        lines_naming(&logs, &acc.join("cert-1.p12")).len(),
        1,
        "{logs}"
    );
    assert!(!logs.contains(secret), "file content in the log:\n{logs}");
}

/// The JSON block that follows `caption` in the README.
fn readme_json(readme: &str, caption: &str) -> serde_json::Value {
    let at = readme
        .find(caption)
        .unwrap_or_else(|| panic!("README has no {caption}"));
    let rest = &readme[at..];
    let start = rest.find("```json\n").expect("a json block") + "```json\n".len();
    let end = start + rest[start..].find("```").expect("end of the block");
    serde_json::from_str(&rest[start..end]).expect("the README's JSON parses")
}

/// The README's file-store example, written by hand as it says (not through `FileStore`), with
/// a real PKCS#12 and the test target's URL in place of the placeholders: the gateway loads it,
/// serves the mapping with the certificate, and warns about nothing.
#[test]
fn a_store_written_by_hand_from_the_readme_example_loads() {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut cert = readme_json(&readme, "`accounts/acme/certificates/1001.json`:");
    let mut maps = readme_json(&readme, "`accounts/acme/mappings.json`:");

    let pki = crate::common::Pki::new();
    let echo = pki.echo();
    let port = echo.addr.port();
    let issued = pki.client("readme-example");
    let p12 =
        mtls_gateway::dev::certgen::to_p12(&issued.cert, &issued.key, &[], "pw").expect("p12");
    use base64::Engine;
    cert["p12"] = base64::engine::general_purpose::STANDARD.encode(p12).into();
    cert["password"] = "pw".into();
    maps["mappings"][0]["url"] = format!("https://localhost:{port}/*").into();

    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    let certs = store.join("accounts/acme/certificates");
    fs::create_dir_all(&certs).expect("mkdir");
    for d in [
        store.clone(),
        store.join("accounts"),
        store.join("accounts/acme"),
        certs.clone(),
    ] {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    for (path, value) in [
        (certs.join("1001.json"), &cert),
        (store.join("accounts/acme/mappings.json"), &maps),
    ] {
        // Written next to the store, then moved in, as the README says.
        let tmp = dir.path().join("new.json");
        fs::write(&tmp, serde_json::to_vec_pretty(value).expect("json")).expect("write");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::rename(&tmp, &path).expect("mv");
    }

    let gw = Gw::start(
        dir.path(),
        &pki.ca_path,
        "proxy:\n  listen: [\"127.0.0.1:{proxy}\"]\n  default_account: acme\n  default_service: TEST_SERVICE\n",
    );
    let r = raw_request(
        gw.proxy,
        &format!("GET http://localhost:{port}/x HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"),
    )
    .expect("request");
    assert_eq!(r.0, 200, "{}", gw.logs());
    let subject = crate::common::header(&r.1, "x-client-cert-subject").unwrap_or_default();
    assert!(subject.contains("readme-example"), "{subject:?}");
    let logs = gw.logs();
    assert!(!logs.contains("not reading"), "{logs}");
    assert!(!logs.contains("corrupt"), "{logs}");
}
