//! `VaultStore` against a live OpenBao server (`tests/it/bao.rs`), seeded the way an operator
//! would (`bao` CLI or the raw HTTP API), plus fault tests: wrong token, missing mount, sealed,
//! stopped and restarted, token file rotated.
//!
//! KV v1 tests use a `kv1` mount (`bao secrets enable -version=1 -path=kv1 kv`). Tests named
//! `fake_...` run against [`FakeVault`], a small in-process HTTP server that answers like Vault's
//! documented API; it proves request/response handling, not compatibility with a real Vault.
//!
//! Run: `cargo nextest run --test it -E 'test(/vault/)'`. The timing run is ignored by default:
//! `cargo test --test it vault::measure -- --ignored --nocapture`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mtls_gateway::store::vault::{VaultConfig, VaultSettings, VaultStore};
use mtls_gateway::store::{
    CertificateMeta, CertificateSecret, Mapping, MappingDocument, Store, StoreError,
    StoredCertificate,
};
use serde_json::{json, Value};

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

fn cert(account: &str, id: u64, password: &str) -> StoredCertificate {
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
    }
}

fn mapping(account: &str, id: u64, cert_id: u64) -> Mapping {
    Mapping {
        id,
        account_id: account.to_owned(),
        name: format!("m{id}"),
        service_name: "IDP".to_owned(),
        url: format!("https://partner{id}.example/api/*"),
        certificate_id: cert_id,
        enabled: true,
        deleted: false,
    }
}

fn cert_path(account: &str, id: u64) -> String {
    format!("kv1/mtls-gateway/accounts/{account}/certificates/{id}")
}

fn versions(inv: &mtls_gateway::store::Inventory) -> BTreeMap<String, String> {
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

// ---- a fake Vault (KV v2, AppRole) -----------------------------------------------------------------

/// An in-process stand-in for Vault's HTTP API, limited to what the store uses: KV v2 under
/// `secret/` (data/metadata paths, versions, soft delete, check-and-set), AppRole login,
/// lookup-self and `sys/internal/ui/mounts`. Errors use Vault's `{"errors": [..]}` shape. It is a
/// fake: it shows that requests and responses are handled as Vault documents them, nothing more.
mod fake {
    use super::*;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use parking_lot::Mutex;

    #[derive(Default)]
    pub struct FakeState {
        /// path inside the mount -> versions (None = soft-deleted)
        pub secrets: BTreeMap<String, Vec<Option<Value>>>,
        pub tokens: HashSet<String>,
        pub logins: u32,
        pub renewals: u32,
        /// Lease of tokens from logins and renewals (default 3600 s).
        pub ttl: u64,
        /// renew-self answers 403 (token cannot be renewed any more).
        pub refuse_renew: bool,
        /// `X-Vault-Namespace` of every request, in order.
        pub namespaces: Vec<Option<String>>,
        /// Answer the next N requests with this status.
        pub fail_next: Option<(u16, u32)>,
    }

    pub struct FakeVault {
        pub addr: String,
        pub state: Arc<Mutex<FakeState>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for FakeVault {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn reply(code: u16, body: Value) -> Response {
        let status = StatusCode::from_u16(code).expect("status code");
        (status, axum::Json(body)).into_response()
    }

    fn errors(code: u16, msg: &str) -> Response {
        let errs: Vec<&str> = if msg.is_empty() { vec![] } else { vec![msg] };
        reply(code, json!({ "errors": errs }))
    }

    fn meta_of(n: usize, deleted: bool) -> Value {
        json!({"created_time": "2024-01-01T00:00:00Z", "custom_metadata": null,
               "deletion_time": if deleted { "2024-01-02T00:00:00Z" } else { "" },
               "destroyed": false, "version": n})
    }

    async fn handle(
        State(st): State<Arc<Mutex<FakeState>>>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let path = uri.path().trim_start_matches("/v1/").to_owned();
        let mut s = st.lock();
        let ns = headers
            .get("x-vault-namespace")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        s.namespaces.push(ns);
        if let Some((code, n)) = s.fail_next {
            s.fail_next = if n > 1 { Some((code, n - 1)) } else { None };
            return errors(code, "injected failure");
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if path == "auth/approle/login" && method == Method::POST {
            if body["role_id"] != json!("role-1") || body["secret_id"] != json!("secret-1") {
                return errors(400, "invalid role or secret ID");
            }
            s.logins += 1;
            let token = format!("hvs.fake-{}", s.logins);
            s.tokens.insert(token.clone());
            let ttl = if s.ttl == 0 { 3600 } else { s.ttl };
            return reply(
                200,
                json!({
                    "request_id": "r", "lease_id": "", "renewable": false, "lease_duration": 0,
                    "data": null, "wrap_info": null, "warnings": null,
                    "auth": {"client_token": token, "accessor": "a", "policies": ["default"],
                             "token_policies": ["default"], "metadata": {"role_name": "gw"},
                             "lease_duration": ttl, "renewable": true, "entity_id": "e",
                             "token_type": "service", "orphan": true}
                }),
            );
        }
        let token = headers
            .get("x-vault-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !s.tokens.contains(token) {
            return errors(403, "permission denied");
        }
        if path == "auth/token/renew-self" && method == Method::POST {
            if s.refuse_renew {
                return errors(403, "permission denied");
            }
            s.renewals += 1;
            let ttl = if s.ttl == 0 { 3600 } else { s.ttl };
            return reply(
                200,
                json!({
                    "request_id": "r", "lease_id": "", "renewable": false, "lease_duration": 0,
                    "data": null, "wrap_info": null, "warnings": null,
                    "auth": {"client_token": token, "accessor": "a", "policies": ["default"],
                             "token_policies": ["default"], "metadata": null,
                             "lease_duration": ttl, "renewable": true, "entity_id": "e",
                             "token_type": "service", "orphan": true}
                }),
            );
        }
        if path == "auth/token/lookup-self" {
            return reply(200, json!({"data": {"ttl": 3600, "renewable": true}}));
        }
        if path == "sys/internal/ui/mounts/secret" {
            return reply(
                200,
                json!({"data": {"type": "kv", "path": "secret/",
                                               "options": {"version": "2"}}}),
            );
        }
        if let Some(p) = path.strip_prefix("secret/data/") {
            let p = p.to_owned();
            return match method.as_str() {
                "GET" => match s.secrets.get(&p) {
                    None => errors(404, ""),
                    Some(vs) => {
                        let n = vs.len();
                        match &vs[n - 1] {
                            Some(d) => reply(
                                200,
                                json!({"data": {"data": d, "metadata": meta_of(n, false)}}),
                            ),
                            None => reply(
                                404,
                                json!({"data": {"data": null, "metadata": meta_of(n, true)}}),
                            ),
                        }
                    }
                },
                "POST" | "PUT" => {
                    let current = s.secrets.get(&p).map(|v| v.len()).unwrap_or(0) as u64;
                    if let Some(cas) = body["options"]["cas"].as_u64() {
                        if cas != current {
                            return errors(
                                400,
                                "check-and-set parameter did not match the current version",
                            );
                        }
                    }
                    let vs = s.secrets.entry(p).or_default();
                    vs.push(Some(body["data"].clone()));
                    let n = vs.len();
                    reply(200, json!({"data": meta_of(n, false)}))
                }
                "DELETE" => {
                    if let Some(last) = s.secrets.get_mut(&p).and_then(|v| v.last_mut()) {
                        *last = None;
                    }
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => errors(405, "unsupported operation"),
            };
        }
        if let Some(p) = path.strip_prefix("secret/metadata/") {
            let p = p.to_owned();
            return match method.as_str() {
                "LIST" => {
                    let dir = p.trim_end_matches('/').to_owned() + "/";
                    let mut keys: Vec<String> = s
                        .secrets
                        .keys()
                        .filter_map(|k| k.strip_prefix(&dir))
                        .map(|rest| match rest.split_once('/') {
                            Some((d, _)) => format!("{d}/"),
                            None => rest.to_owned(),
                        })
                        .collect();
                    keys.dedup();
                    if keys.is_empty() {
                        errors(404, "")
                    } else {
                        reply(200, json!({"data": {"keys": keys}}))
                    }
                }
                "GET" => match s.secrets.get(&p) {
                    None => errors(404, ""),
                    Some(vs) => {
                        let versions: serde_json::Map<String, Value> = vs
                            .iter()
                            .enumerate()
                            .map(|(i, v)| ((i + 1).to_string(), meta_of(i + 1, v.is_none())))
                            .collect();
                        reply(
                            200,
                            json!({"data": {"current_version": vs.len(),
                            "oldest_version": 1, "max_versions": 0, "cas_required": false,
                            "created_time": "", "updated_time": "", "delete_version_after": "0s",
                            "custom_metadata": null, "versions": versions}}),
                        )
                    }
                },
                "DELETE" => {
                    s.secrets.remove(&p);
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => errors(405, "unsupported operation"),
            };
        }
        errors(
            404,
            &format!("no handler for route \"{path}\". route entry not found."),
        )
    }

    impl FakeVault {
        pub async fn start() -> FakeVault {
            let state = Arc::new(Mutex::new(FakeState::default()));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind fake vault");
            let addr = format!("http://{}", listener.local_addr().expect("addr"));
            let app = axum::Router::new()
                .fallback(handle)
                .with_state(state.clone());
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            FakeVault { addr, state, task }
        }
    }
}

use fake::FakeVault;

async fn fake_with_approle() -> (FakeVault, tempfile::TempDir, VaultConfig) {
    let fv = FakeVault::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let role = dir.path().join("role-id");
    let secret = dir.path().join("secret-id");
    std::fs::write(&role, "role-1\n").expect("write");
    std::fs::write(&secret, "secret-1\n").expect("write");
    let yaml = format!(
        "address: {}\nkv_version: 2\nrequest_timeout_ms: 3000\n\
         auth:\n  method: approle\n  role_id_file: {}\n  secret_id_file: {}\n",
        fv.addr,
        role.display(),
        secret.display()
    );
    let s: VaultSettings = serde_yaml::from_str(&yaml).expect("yaml");
    let cfg = s.validate("store.vault").expect("valid");
    (fv, dir, cfg)
}

fn fake_path(p: &str) -> String {
    format!("mtls-gateway/{p}")
}

#[tokio::test]
async fn fake_kv2_versions_come_from_vault_and_match_inventory() {
    let (fv, _dir, cfg) = fake_with_approle().await;
    let store = VaultStore::connect(&cfg).await.expect("connect");
    assert_eq!(
        store
            .put_certificate(&cert("acme", 1, "a"))
            .await
            .expect("put"),
        "1"
    );
    assert_eq!(
        store
            .put_certificate(&cert("acme", 1, "b"))
            .await
            .expect("put"),
        "2"
    );
    store
        .put_certificate(&cert("globex", 2, "c"))
        .await
        .expect("put");
    let got = store
        .get_certificate("acme", 1)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (got.value.secret.password.as_str(), got.version.as_str()),
        ("b", "2")
    );

    let inv = store.inventory().await.expect("inventory");
    assert_eq!(
        inv.certificates,
        vec![
            ("acme".into(), 1, "2".into()),
            ("globex".into(), 2, "1".into())
        ]
    );
    // KV v2 stores the document under data.data, exactly the StoredCertificate fields.
    let st = fv.state.lock();
    let stored = st.secrets[&fake_path("accounts/acme/certificates/1")][1]
        .clone()
        .expect("live");
    assert_eq!(stored["password"], json!("b"));
    assert_eq!(stored["accountId"], json!("acme"));
    // KV v2 keeps no index: versions are Vault's.
    assert!(!st.secrets.contains_key(&fake_path("accounts/acme/index")));
}

#[tokio::test]
async fn fake_kv2_mappings_use_check_and_set() {
    let (_fv, _dir, cfg) = fake_with_approle().await;
    let store = VaultStore::connect(&cfg).await.expect("connect");
    let doc = MappingDocument {
        mappings: vec![mapping("acme", 1, 1)],
    };
    assert_eq!(
        store
            .put_mappings("acme", &doc, Some(""))
            .await
            .expect("create"),
        "1"
    );
    let err = store
        .put_mappings("acme", &doc, Some(""))
        .await
        .expect_err("exists");
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(
        store
            .put_mappings("acme", &doc, Some("1"))
            .await
            .expect("update"),
        "2"
    );
    let err = store
        .put_mappings("acme", &doc, Some("1"))
        .await
        .expect_err("stale");
    assert!(
        matches!(&err, StoreError::Conflict(k) if k.contains("accounts/acme/mappings")),
        "{err}"
    );
    let m = store.get_mappings("acme").await.expect("get");
    assert_eq!((m.value, m.version.as_str()), (doc, "2"));
}

#[tokio::test]
async fn fake_kv2_soft_deleted_latest_version_counts_as_absent() {
    let (fv, _dir, cfg) = fake_with_approle().await;
    let store = VaultStore::connect(&cfg).await.expect("connect");
    store
        .put_certificate(&cert("acme", 1, "a"))
        .await
        .expect("put");
    store
        .put_certificate(&cert("acme", 2, "a"))
        .await
        .expect("put");
    // `vault kv delete` soft-deletes the latest version.
    if let Some(last) = fv
        .state
        .lock()
        .secrets
        .get_mut(&fake_path("accounts/acme/certificates/1"))
        .and_then(|v| v.last_mut())
    {
        *last = None;
    }
    assert!(store
        .get_certificate("acme", 1)
        .await
        .expect("get")
        .is_none());
    let inv = store.inventory().await.expect("inventory");
    assert_eq!(inv.certificates, vec![("acme".into(), 2, "1".into())]);
    assert!(store.delete_certificate("acme", 2).await.expect("delete"));
    assert!(!store
        .delete_certificate("acme", 1)
        .await
        .expect("already deleted"));
    assert!(!fv
        .state
        .lock()
        .secrets
        .contains_key(&fake_path("accounts/acme/certificates/2")));
}

#[tokio::test]
async fn fake_approle_logs_in_again_after_a_403_and_retries_once() {
    let (fv, dir, cfg) = fake_with_approle().await;
    let store = VaultStore::connect(&cfg).await.expect("connect");
    store
        .put_certificate(&cert("acme", 1, "a"))
        .await
        .expect("put");
    assert_eq!(fv.state.lock().logins, 1);

    // The token is revoked behind our back.
    fv.state.lock().tokens.clear();
    let inv = store
        .inventory()
        .await
        .expect("one fresh login, not an outage");
    assert_eq!(inv.certificates.len(), 1);
    assert_eq!(fv.state.lock().logins, 2);

    // Credentials that stopped working: Denied, with the fix in the message.
    fv.state.lock().tokens.clear();
    std::fs::write(dir.path().join("secret-id"), "expired\n").expect("write");
    // Re-logins are rate limited; a fresh store sees the refusal at once.
    let store2 = VaultStore::connect(&cfg).await.expect("connect");
    let err = store2.inventory().await.expect_err("login refused");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Denied(_)), "{msg}");
    assert!(
        msg.contains("approle login at auth/approle refused (400"),
        "{msg}"
    );
    assert!(msg.contains("secret_id_file"), "{msg}");
    assert!(!msg.contains("expired\n"), "{msg}");
}

#[tokio::test]
async fn fake_approle_token_is_renewed_before_expiry_and_replaced_when_renewal_is_refused() {
    let (fv, _dir, cfg) = fake_with_approle().await;
    fv.state.lock().ttl = 1; // renew at ~0.67 s
    let store = VaultStore::connect(&cfg).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fv.state.lock().renewals < 2 {
        assert!(
            Instant::now() < deadline,
            "no renewal by the background task"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fv.state.lock().logins, 1, "renewed, not logged in again");
    store
        .inventory()
        .await
        .expect("works with the renewed token");

    fv.state.lock().refuse_renew = true;
    while fv.state.lock().logins < 2 {
        assert!(
            Instant::now() < deadline,
            "no new login after a refused renewal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.inventory().await.expect("works with the new login");
}

#[tokio::test]
async fn fake_every_request_carries_the_namespace_header() {
    let (fv, _dir, cfg) = fake_with_approle().await;
    let store = VaultStore::connect(&VaultConfig {
        namespace: Some("admin/team-a".into()),
        ..cfg
    })
    .await
    .expect("connect");
    store
        .put_certificate(&cert("acme", 1, "a"))
        .await
        .expect("put");
    store.inventory().await.expect("inventory");
    let st = fv.state.lock();
    assert!(st.namespaces.len() >= 4, "login, write, list, metadata");
    assert!(st
        .namespaces
        .iter()
        .all(|n| n.as_deref() == Some("admin/team-a")));
}

#[tokio::test]
async fn fake_5xx_is_unavailable_and_wrong_kv_version_is_named() {
    let (fv, _dir, cfg) = fake_with_approle().await;
    let store = VaultStore::connect(&cfg).await.expect("connect");
    store.inventory().await.expect("works");
    fv.state.lock().fail_next = Some((502, 1));
    let err = store.inventory().await.expect_err("502");
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("502")),
        "{err}"
    );
    fv.state.lock().fail_next = Some((503, 1));
    let err = store.get_certificate("acme", 1).await.expect_err("503");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");

    // kv_version: 1 against a mount Vault reports as version 2.
    let v1 = VaultStore::connect(&VaultConfig {
        kv: mtls_gateway::store::vault::KvVersion::V1,
        ..cfg
    })
    .await
    .expect("connect");
    let err = v1.inventory().await.expect_err("mismatch");
    assert!(
        err.to_string().contains("set store.vault.kv_version: 2"),
        "{err}"
    );
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
