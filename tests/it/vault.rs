//! `VaultStore` against a live OpenBao server (`tests/it/bao.rs`), seeded the way an operator
//! would (`bao` CLI or the raw HTTP API), plus fault tests: wrong token, missing mount, sealed,
//! stopped and restarted, token file rotated.
//!
//! KV v1 tests use a `kv1` mount (`bao secrets enable -version=1 -path=kv1 kv`). KV v2, AppRole,
//! namespaces and policies are in `vault_live.rs`; the whole gateway in `vault_gateway.rs`.
//!
//! Run: `cargo nextest run --test it -E 'test(/vault/)'`. The timing run is ignored by default:
//! `cargo test --test it vault::measure -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mtls_gateway::store::vault::{VaultConfig, VaultSettings, VaultStore};
use mtls_gateway::store::{
    CertificateMeta, CertificateSecret, Mapping, MappingDocument, Store, StoreError,
    StoredCertificate,
};
use serde_json::json;

use crate::bao::Bao;

// ---- helpers ------------------------------------------------------------------------------------

/// A KV v1 store at mount `kv1` (`bao secrets enable -version=1 -path=kv1 kv`).
fn config(addr: &str, token_file: &Path, extra: &str) -> VaultConfig {
    let yaml = format!(
        "address: {addr}\nkv_version: 1\nmount: kv1\nprefix: mtls-gateway\n\
         request_timeout_ms: 3000\nread_concurrency: 8\n\
         auth:\n  method: token\n  token_file: {}\n{extra}",
        token_file.display()
    );
    let s: VaultSettings = serde_yaml::from_str(&yaml).expect("test config parses");
    s.validate("store.vault").expect("test config validates")
}

/// A fresh OpenBao dev server with a KV v1 mount at `kv1`, a temp dir with a token file holding
/// the root token, and a KV v1 config.
async fn setup() -> (Bao, tempfile::TempDir, VaultConfig) {
    setup_on(Bao::dev().await).await
}

async fn setup_on(rv: Bao) -> (Bao, tempfile::TempDir, VaultConfig) {
    rv.enable_kv1("kv1");
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", rv.root_token)).expect("write token");
    let cfg = config(&rv.addr, &token_file, "");
    (rv, dir, cfg)
}

pub(crate) fn cert(account: &str, id: u64, password: &str) -> StoredCertificate {
    StoredCertificate {
        meta: CertificateMeta {
            id,
            account_id: account.to_owned(),
            name: format!("cert-{id}"),
            display_name: format!("Certificate {id}"),
            deleted: false,
            not_after: Some(1_900_000_000),
            updated_at: 1_700_000_000,
        },
        secret: CertificateSecret {
            p12: (0..600u32).map(|i| (i * 7 + id as u32) as u8).collect(),
            password: password.to_owned(),
        },
        lifecycle: None,
    }
}

pub(crate) fn mapping(account: &str, id: u64, cert_id: u64) -> Mapping {
    Mapping {
        id,
        account_id: account.to_owned(),
        name: format!("m{id}"),
        service_name: "IDP".to_owned(),
        url: format!("https://partner{id}.example/api/*"),
        certificate_id: cert_id,
        enabled: true,
        deleted: false,
        cutover_check: None,
    }
}

fn cert_path(account: &str, id: u64) -> String {
    format!("kv1/mtls-gateway/accounts/{account}/certificates/{id}")
}

pub(crate) fn versions(inv: &mtls_gateway::store::Inventory) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (a, id, v) in &inv.certificates {
        m.insert(format!("{a}/{id}"), v.clone());
    }
    for (a, v) in &inv.mappings {
        m.insert(format!("{a}/mappings"), v.clone());
    }
    m
}

// ---- KV v1 against OpenBao ----------------------------------------------------------------------

#[tokio::test]
async fn certificate_put_get_delete_round_trips_on_kv1() {
    let (rv, _dir, cfg) = setup().await;
    let store = VaultStore::connect(&cfg).await.expect("connect");
    let c = cert("acme", 1001, "s3cret");

    let v = store.put_certificate(&c).await.expect("put");
    let got = store
        .get_certificate("acme", 1001)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.value, c);
    assert_eq!(got.version, v);
    let inv = store.inventory().await.expect("inventory");
    assert_eq!(inv.certificates, vec![("acme".to_owned(), 1001, v.clone())]);

    // The documented layout: one secret with the metadata, p12 (base64) and password.
    let raw = rv
        .kv_get(&cert_path("acme", 1001))
        .await
        .expect("raw entry exists");
    assert_eq!(raw["accountId"], json!("acme"));
    assert_eq!(raw["id"], json!(1001));
    assert_eq!(raw["password"], json!("s3cret"));
    assert!(raw["p12"].as_str().is_some_and(|s| !s.is_empty()));

    assert!(store
        .delete_certificate("acme", 1001)
        .await
        .expect("delete"));
    assert!(store
        .get_certificate("acme", 1001)
        .await
        .expect("get")
        .is_none());
    assert!(!store
        .delete_certificate("acme", 1001)
        .await
        .expect("delete again"));
    assert!(store
        .inventory()
        .await
        .expect("inventory")
        .certificates
        .is_empty());
}

#[tokio::test]
async fn mappings_round_trip_and_a_stale_expected_version_conflicts() {
    let (_rv, _dir, cfg) = setup().await;
    let store = VaultStore::connect(&cfg).await.expect("connect");

    let empty = store.get_mappings("acme").await.expect("get empty");
    assert!(empty.value.mappings.is_empty());
    assert_eq!(empty.version, "");

    let doc = MappingDocument {
        mappings: vec![mapping("acme", 1, 1001), mapping("acme", 2, 1002)],
    };
    let v1 = store
        .put_mappings("acme", &doc, Some(""))
        .await
        .expect("create");
    let got = store.get_mappings("acme").await.expect("get");
    assert_eq!(
        (got.value.clone(), got.version.clone()),
        (doc.clone(), v1.clone())
    );

    let mut doc2 = doc.clone();
    doc2.mappings.pop();
    let err = store
        .put_mappings("acme", &doc2, Some("not-the-version"))
        .await
        .expect_err("stale version");
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let err = store
        .put_mappings("acme", &doc2, Some(""))
        .await
        .expect_err("exists");
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");

    let v2 = store
        .put_mappings("acme", &doc2, Some(&v1))
        .await
        .expect("update");
    assert_ne!(v1, v2);
    let inv = store.inventory().await.expect("inventory");
    assert_eq!(inv.mappings, vec![("acme".to_owned(), v2)]);

    let wrong_account = MappingDocument {
        mappings: vec![mapping("other", 3, 1)],
    };
    let err = store
        .put_mappings("acme", &wrong_account, None)
        .await
        .expect_err("account");
    assert!(err.to_string().contains("belongs to account"), "{err}");
}

#[tokio::test]
async fn inventory_versions_stay_equal_until_an_entry_changes() {
    let (_rv, _dir, cfg) = setup().await;
    let store = VaultStore::connect(&cfg).await.expect("connect");
    for (a, id) in [("acme", 1), ("acme", 2), ("globex", 3)] {
        store
            .put_certificate(&cert(a, id, "pw"))
            .await
            .expect("put");
    }
    store
        .put_mappings(
            "acme",
            &MappingDocument {
                mappings: vec![mapping("acme", 9, 1)],
            },
            None,
        )
        .await
        .expect("mappings");

    let first = versions(&store.inventory().await.expect("inventory"));
    let second = versions(&store.inventory().await.expect("inventory"));
    assert_eq!(first.len(), 4);
    assert_eq!(first, second, "nothing changed, versions must not either");

    // get_* and inventory agree on versions.
    let g = store
        .get_certificate("globex", 3)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(Some(&g.version), first.get("globex/3"));
    let m = store.get_mappings("acme").await.expect("get mappings");
    assert_eq!(Some(&m.version), first.get("acme/mappings"));

    store
        .put_certificate(&cert("acme", 2, "rotated"))
        .await
        .expect("rotate");
    let third = versions(&store.inventory().await.expect("inventory"));
    let changed: Vec<&String> = first
        .keys()
        .filter(|k| first.get(*k) != third.get(*k))
        .collect();
    assert_eq!(changed, vec!["acme/2"]);
}

#[tokio::test]
async fn inventory_falls_back_to_the_entries_when_the_index_is_missing_or_corrupt() {
    let (rv, _dir, cfg) = setup().await;
    let store = VaultStore::connect(&cfg).await.expect("connect");
    for id in 1..=5 {
        store
            .put_certificate(&cert("acme", id, "pw"))
            .await
            .expect("put");
    }
    store
        .put_mappings(
            "acme",
            &MappingDocument {
                mappings: vec![mapping("acme", 9, 1)],
            },
            None,
        )
        .await
        .expect("mappings");
    let index_path = "kv1/mtls-gateway/accounts/acme/index";
    let index = rv
        .kv_get(index_path)
        .await
        .expect("the store wrote an index");
    assert_eq!(index["certificates"].as_object().map(|o| o.len()), Some(5));
    let with_index = store.inventory().await.expect("inventory");

    rv.kv_delete(index_path).await;
    assert_eq!(store.inventory().await.expect("no index"), with_index);

    rv.kv_put(index_path, &json!({"certificates": "garbage"}))
        .await;
    assert_eq!(store.inventory().await.expect("corrupt index"), with_index);

    // The next write through the store rebuilds a complete index.
    store
        .put_certificate(&cert("acme", 6, "pw"))
        .await
        .expect("put");
    let index = rv.kv_get(index_path).await.expect("index rebuilt");
    assert_eq!(index["certificates"].as_object().map(|o| o.len()), Some(6));
}

#[tokio::test]
async fn entries_seeded_by_hand_in_the_documented_layout_are_read() {
    let (rv, _dir, cfg) = setup().await;
    use base64::Engine;
    let p12: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
    // `base64` wraps at 76 columns and ends with a newline; `vault kv put k=v` stores strings.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&p12);
    let wrapped: String = b64
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
        .collect();
    // bao kv put kv1/mtls-gateway/accounts/acme/certificates/1001 \
    //   name=partner-a displayName="Partner A" p12=@partner-a.p12.b64 password=changeit
    rv.kv_put(
        &cert_path("acme", 1001),
        &json!({"name": "partner-a", "displayName": "Partner A", "p12": wrapped,
                "password": "changeit", "updatedAt": "1700000000"}),
    )
    .await;
    // bao kv put kv1/mtls-gateway/accounts/acme/mappings mappings=@mappings.json
    let mappings = json!([{"id": 1, "name": "idp", "serviceName": "IDP",
                           "url": "https://idp.partner.example/*", "certificateId": 1001}]);
    rv.kv_put(
        "kv1/mtls-gateway/accounts/acme/mappings",
        &json!({"mappings": mappings.to_string()}),
    )
    .await;

    let store = VaultStore::connect(&cfg).await.expect("connect");
    let inv = store.inventory().await.expect("inventory");
    assert_eq!(inv.certificates.len(), 1);
    assert_eq!(inv.mappings.len(), 1);
    let c = store
        .get_certificate("acme", 1001)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(c.value.secret.p12, p12);
    assert_eq!(c.value.secret.password, "changeit");
    assert_eq!(c.value.meta.id, 1001);
    assert_eq!(c.value.meta.account_id, "acme");
    assert_eq!(c.version, inv.certificates[0].2);
    let m = store.get_mappings("acme").await.expect("mappings");
    assert_eq!(m.value.mappings[0].certificate_id, 1001);
    assert_eq!(m.value.mappings[0].account_id, "acme");
    assert_eq!(m.version, inv.mappings[0].1);

    // A certificate added by hand to an account that has an index (the store wrote one) is
    // listed too: presence comes from LIST, not from the index.
    store
        .put_certificate(&cert("acme", 1002, "pw"))
        .await
        .expect("put");
    rv.kv_put(
        &cert_path("acme", 1003),
        &json!({"name": "by-hand", "p12": b64, "password": "x"}),
    )
    .await;
    let ids: Vec<u64> = store
        .inventory()
        .await
        .expect("inventory")
        .certificates
        .iter()
        .map(|c| c.1)
        .collect();
    assert_eq!(ids, vec![1001, 1002, 1003]);
}

#[tokio::test]
async fn an_undecodable_entry_is_listed_and_reported_as_corrupt_without_its_secret() {
    let (rv, _dir, cfg) = setup().await;
    rv.kv_put(
        &cert_path("acme", 7),
        &json!({"name": "bad", "p12": "AAEC", "password": 987654321}),
    )
    .await;
    let store = VaultStore::connect(&cfg).await.expect("connect");
    let inv = store.inventory().await.expect("inventory");
    assert_eq!(inv.certificates.len(), 1);
    assert!(inv.certificates[0].2.starts_with("corrupt-"));
    let err = store.get_certificate("acme", 7).await.expect_err("corrupt");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("kv1/mtls-gateway/accounts/acme/certificates/7"),
        "{msg}"
    );
    assert!(msg.contains("password"), "{msg}");
    assert!(!msg.contains("987654321"), "{msg}");
}

#[tokio::test]
async fn a_wrong_token_is_denied_with_a_message_naming_the_auth() {
    let (rv, dir, _cfg) = setup().await;
    let token_file = dir.path().join("wrong");
    std::fs::write(&token_file, "not-a-valid-token").expect("write");
    let store = VaultStore::connect(&config(&rv.addr, &token_file, ""))
        .await
        .expect("connect");
    let err = store.inventory().await.expect_err("denied");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Denied(_)), "{msg}");
    assert!(msg.contains("403"), "{msg}");
    assert!(
        msg.contains(&format!("token file {}", token_file.display())),
        "{msg}"
    );
    assert!(!msg.contains("not-a-valid-token"), "{msg}");
}

#[tokio::test]
async fn a_missing_mount_error_names_the_mount_and_the_key() {
    let (rv, dir, _cfg) = setup().await;
    let cfg = config(&rv.addr, &dir.path().join("token"), "");
    let cfg = VaultConfig {
        mount: "nosuchmount".into(),
        ..cfg
    };
    let store = VaultStore::connect(&cfg).await.expect("connect");
    let err = store.inventory().await.expect_err("no mount");
    let msg = err.to_string();
    assert!(msg.contains("mount nosuchmount not found"), "{msg}");
    assert!(msg.contains("store.vault.mount"), "{msg}");
    let err = store
        .put_certificate(&cert("acme", 1, "pw"))
        .await
        .expect_err("no mount");
    assert!(
        err.to_string().contains("mount nosuchmount not found"),
        "{err}"
    );

    // A mount created later works without a restart.
    rv.enable_kv1("nosuchmount");
    store
        .put_certificate(&cert("acme", 1, "pw"))
        .await
        .expect("put after mount");
    assert_eq!(
        store
            .inventory()
            .await
            .expect("inventory")
            .certificates
            .len(),
        1
    );
}

#[tokio::test]
async fn a_sealed_vault_is_unavailable_and_says_sealed() {
    let (rv, _dir, cfg) = setup().await;
    let store = VaultStore::connect(&cfg).await.expect("connect");
    store
        .put_certificate(&cert("acme", 1, "pw"))
        .await
        .expect("put");
    let before = store.inventory().await.expect("inventory");

    rv.seal();
    let err = store.inventory().await.expect_err("sealed");
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("sealed")),
        "{err}"
    );
    let err = store.get_certificate("acme", 1).await.expect_err("sealed");
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m == "vault is sealed"),
        "{err}"
    );

    rv.unseal().await;
    assert_eq!(store.inventory().await.expect("unsealed"), before);
}

#[tokio::test]
async fn a_stopped_vault_is_unavailable_and_a_restart_recovers() {
    let (mut rv, _dir, cfg) = setup_on(Bao::persistent().await).await;
    let store = VaultStore::connect(&cfg).await.expect("connect");
    store
        .put_certificate(&cert("acme", 1, "pw"))
        .await
        .expect("put");
    let before = store.inventory().await.expect("inventory");

    rv.stop();
    let started = Instant::now();
    let err = store.inventory().await.expect_err("stopped");
    assert!(matches!(&err, StoreError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("cannot reach vault"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refused connections fail fast"
    );

    rv.restart().await;
    // The first request after the restart must work (no stale pooled connection errors).
    assert_eq!(store.inventory().await.expect("after restart"), before);
    let c = store
        .get_certificate("acme", 1)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(c.value, cert("acme", 1, "pw"));
}

#[tokio::test]
async fn a_vault_that_stops_answering_times_out_naming_the_timeout_and_recovers() {
    let (rv, _dir, cfg) = setup().await;
    let cfg = VaultConfig {
        request_timeout: Duration::from_millis(500),
        ..cfg
    };
    let store = VaultStore::connect(&cfg).await.expect("connect");
    store
        .put_certificate(&cert("acme", 1, "pw"))
        .await
        .expect("put");
    let before = store.inventory().await.expect("inventory");

    rv.freeze();
    let started = Instant::now();
    let err = store.inventory().await.expect_err("hung server");
    let waited = started.elapsed();
    rv.thaw();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("did not answer") && m.contains("within 500 ms")),
        "{err}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "bounded by request_timeout_ms: {waited:?}"
    );
    assert_eq!(store.inventory().await.expect("answers again"), before);
}

#[tokio::test]
async fn the_token_file_is_reread_when_it_changes() {
    let (rv, dir, cfg) = setup().await;
    let token_file = dir.path().join("token");
    let cfg = VaultConfig {
        token_file_check_interval: Duration::ZERO,
        ..cfg
    };
    let store = VaultStore::connect(&cfg).await.expect("connect");
    store.inventory().await.expect("root token works");

    // The old token is still valid: only a re-read of the file can make this fail.
    std::fs::write(&token_file, "revoked-or-garbage\n").expect("write");
    let err = store
        .inventory()
        .await
        .expect_err("new file content is used");
    assert!(matches!(err, StoreError::Denied(_)), "{err}");

    // A Vault Agent sink writes the new token (a rename, as agents do).
    let child = rv.token_with_policy(
        "gw-kv1",
        "path \"kv1/mtls-gateway/*\" { capabilities = [\"read\", \"list\"] }\n",
    );
    let tmp = dir.path().join(".token.tmp");
    std::fs::write(&tmp, format!("{child}\n")).expect("write");
    std::fs::rename(&tmp, &token_file).expect("rename");
    store.inventory().await.expect("new token works");
}

#[tokio::test]
async fn an_entry_rotated_by_hand_is_seen_by_the_next_kv1_full_scan() {
    let (rv, _dir, cfg) = setup().await;
    let indexed = VaultStore::connect(&VaultConfig {
        kv1_full_scan_interval: Duration::from_secs(3600),
        ..cfg.clone()
    })
    .await
    .expect("connect");
    let full = VaultStore::connect(&VaultConfig {
        kv1_full_scan_interval: Duration::ZERO,
        ..cfg
    })
    .await
    .expect("connect");
    indexed
        .put_certificate(&cert("acme", 1, "old"))
        .await
        .expect("put");
    let before = indexed.inventory().await.expect("inventory");

    // An operator rotates the certificate with `vault kv put`, bypassing the index.
    let mut raw = rv.kv_get(&cert_path("acme", 1)).await.expect("entry");
    raw["password"] = json!("new");
    rv.kv_put(&cert_path("acme", 1), &raw).await;

    // Between full scans the index answers (documented limitation of KV v1)...
    assert_eq!(indexed.inventory().await.expect("inventory"), before);
    // ...a full scan reads the entry, and its version matches get_certificate's.
    let after = full.inventory().await.expect("inventory");
    assert_ne!(after, before);
    let got = full
        .get_certificate("acme", 1)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.value.secret.password, "new");
    assert_eq!(after.certificates[0].2, got.version);
}

#[tokio::test]
async fn reindex_gives_hand_seeded_accounts_an_index_with_the_same_versions() {
    let (rv, _dir, cfg) = setup().await;
    for id in 1..=3 {
        let v = serde_json::to_value(cert("acme", id, "pw")).expect("encode");
        rv.kv_put(&cert_path("acme", id), &v).await;
    }
    let store = VaultStore::connect(&cfg).await.expect("connect");
    let before = store.inventory().await.expect("inventory");
    assert!(rv
        .kv_get("kv1/mtls-gateway/accounts/acme/index")
        .await
        .is_none());

    assert_eq!(store.reindex().await.expect("reindex"), 1);
    let index = rv
        .kv_get("kv1/mtls-gateway/accounts/acme/index")
        .await
        .expect("index written");
    assert_eq!(index["certificates"].as_object().map(|o| o.len()), Some(3));
    assert_eq!(index["mappings"], json!(""));
    assert_eq!(store.inventory().await.expect("inventory"), before);
}

/// TLS in front of OpenBao's plain listener (the harness talks plain HTTP to it). The store sees a real TLS server with a certificate from a test CA,
/// as behind a TLS-terminating load balancer.
async fn tls_front(backend: &str, dir: &Path) -> (String, std::path::PathBuf) {
    use boring::ssl::{SslAcceptor, SslMethod};
    use mtls_gateway::dev::certgen;
    let ca = certgen::new_ca("Vault Test CA").expect("ca");
    let leaf = certgen::issue(
        &ca,
        &certgen::Leaf::server(
            "localhost",
            &["localhost"],
            &["127.0.0.1".parse().expect("ip")],
        ),
    )
    .expect("leaf");
    let ca_file = dir.join("vault-ca.pem");
    std::fs::write(&ca_file, certgen::to_pem(&ca.cert)).expect("write ca");
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
    b.set_certificate(&leaf.cert).expect("cert");
    b.set_private_key(&leaf.key).expect("key");
    let acceptor = Arc::new(b.build());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!(
        "https://localhost:{}",
        listener.local_addr().expect("addr").port()
    );
    let backend = backend.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let backend = backend.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = tokio_boring::accept(&acceptor, tcp).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(&backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (addr, ca_file)
}

#[tokio::test]
async fn tls_to_vault_trusts_the_ca_file_and_nothing_else() {
    let (rv, dir, cfg) = setup().await;
    let (https, ca_file) = tls_front(&rv.addr, dir.path()).await;
    let store = VaultStore::connect(&VaultConfig {
        address: https.clone(),
        ca_file: Some(ca_file),
        ..cfg.clone()
    })
    .await
    .expect("connect");
    store
        .put_certificate(&cert("acme", 1, "pw"))
        .await
        .expect("put over TLS");
    assert_eq!(
        store
            .inventory()
            .await
            .expect("inventory")
            .certificates
            .len(),
        1
    );

    let untrusting = VaultStore::connect(&VaultConfig {
        address: https,
        ca_file: None,
        ..cfg
    })
    .await
    .expect("connect");
    let err = untrusting.inventory().await.expect_err("unknown CA");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("cannot reach vault"), "{err}");
}

// ---- timing (ignored by default) ----------------------------------------------------------------

/// Seeds `n` certificates (100 per account, ~2.5 KB of p12 each) through raw HTTP, then times what
/// a refresher does. Prints a table; see docs/vault.md for the figures.
async fn measure_one(n: usize) {
    let (rv, _dir, cfg) = setup().await;
    let accounts = n.div_ceil(100);
    let p12: Vec<u8> = (0..2500u32).map(|i| (i * 31 % 256) as u8).collect();
    let seed_started = Instant::now();
    let rv = Arc::new(rv);
    let jobs: Vec<(usize, u64)> = (0..n).map(|i| (i % accounts, i as u64 + 1)).collect();
    use futures::StreamExt;
    futures::stream::iter(jobs)
        .map(|(a, id)| {
            let rv = rv.clone();
            let mut c = cert(&format!("acct{a:03}"), id, "pw");
            c.secret.p12 = p12.clone();
            async move {
                let v = serde_json::to_value(&c).expect("encode");
                rv.kv_put(&cert_path(&c.meta.account_id, id), &v).await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let seed = seed_started.elapsed();
    let store = VaultStore::connect(&cfg).await.expect("connect");

    async fn read_all(store: &VaultStore, inv: &mtls_gateway::store::Inventory) {
        use futures::StreamExt;
        let n = futures::stream::iter(inv.certificates.iter())
            .map(|(a, id, _)| async move {
                store
                    .get_certificate(a, *id)
                    .await
                    .expect("get")
                    .expect("exists")
            })
            .buffer_unordered(16)
            .count()
            .await;
        assert_eq!(n, inv.certificates.len());
    }
    let t = |start: Instant| format!("{:>7.0} ms", start.elapsed().as_secs_f64() * 1000.0);

    let s = Instant::now();
    let inv = store.inventory().await.expect("inventory");
    let inv_noindex = t(s);
    assert_eq!(inv.certificates.len(), n);
    let s = Instant::now();
    read_all(&store, &inv).await;
    let read = t(s);
    let s = Instant::now();
    let again = store.inventory().await.expect("inventory");
    let unchanged_noindex = t(s);
    assert_eq!(again, inv);

    // Give every account an index the way the gateway does: a write through the store.
    for a in 0..accounts {
        let acct = format!("acct{a:03}");
        store
            .put_mappings(
                &acct,
                &MappingDocument {
                    mappings: vec![mapping(&acct, 1, 1)],
                },
                None,
            )
            .await
            .expect("mappings");
    }
    let s = Instant::now();
    let inv2 = store.inventory().await.expect("inventory");
    let unchanged_index = t(s);
    assert_eq!(inv2.certificates, inv.certificates);
    let s = Instant::now();
    let mut changed = cert("acct000", 1, "rotated");
    changed.secret.p12 = p12.clone();
    store.put_certificate(&changed).await.expect("rotate");
    let write_one = t(s);
    let s = Instant::now();
    let inv3 = store.inventory().await.expect("inventory");
    let diff: Vec<_> = inv3
        .certificates
        .iter()
        .zip(inv2.certificates.iter())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(diff.len(), 1);
    store
        .get_certificate("acct000", 1)
        .await
        .expect("get")
        .expect("exists");
    let one_changed = t(s);

    eprintln!(
        "\n== {n} certificates in {accounts} accounts (seeded in {:.1} s) ==\n\
         inventory, no index (reads + digests every entry):   {inv_noindex}\n\
         get_certificate x {n} (16 at a time):              {read}\n\
         unchanged inventory, no index:                       {unchanged_noindex}\n\
         unchanged inventory, with index:                     {unchanged_index}\n\
         put_certificate (entry + index update):              {write_one}\n\
         inventory + get after 1 change, with index:          {one_changed}\n",
        seed.as_secs_f64()
    );
}

#[tokio::test]
#[ignore = "timing run: cargo test --test it vault::measure -- --ignored --nocapture"]
async fn measure_inventory_and_full_read_of_1k_and_10k_certificates() {
    measure_one(1_000).await;
    measure_one(10_000).await;
}
