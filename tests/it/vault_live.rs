//! `VaultStore` on the paths most production Vaults run, against a live OpenBao
//! (`tests/it/bao.rs`): KV version 2 at `secret/`, AppRole logins with ids read from files and
//! short token TTLs, namespaces, and a policy that denies one path. What the server did is read
//! back with the `bao` CLI (`bao kv get/metadata get`) and its audit log (which API paths the
//! store called: logins, renewals, denials), never from the store under test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mtls_gateway::store::vault::{VaultConfig, VaultSettings, VaultStore};
use mtls_gateway::store::{MappingDocument, Store, StoreError};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::bao::Bao;
use crate::vault::{cert, mapping, versions};

/// A KV v2 store at `secret/mtls-gateway` with the given `auth:` block (indented two spaces).
fn v2_config(addr: &str, auth: &str, extra: &str) -> VaultConfig {
    let yaml = format!(
        "address: {addr}\nkv_version: 2\nmount: secret\nprefix: mtls-gateway\n\
         request_timeout_ms: 3000\nread_concurrency: 8\nauth:\n{auth}{extra}"
    );
    let s: VaultSettings = serde_yaml::from_str(&yaml).expect("test config parses");
    s.validate("store.vault").expect("test config validates")
}

fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{token}\n")).expect("write token file");
    p
}

fn token_auth(file: &Path) -> String {
    format!("  method: token\n  token_file: {}\n", file.display())
}

/// A dev server and a KV v2 config using the root token from a file.
async fn dev_root() -> (Bao, tempfile::TempDir, VaultConfig) {
    let bao = Bao::dev().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let f = token_file(dir.path(), "root-token", &bao.root_token);
    let cfg = v2_config(&bao.addr, &token_auth(&f), "");
    (bao, dir, cfg)
}

const CERT1: &str = "mtls-gateway/accounts/acme/certificates/1";
const MAPPINGS: &str = "mtls-gateway/accounts/acme/mappings";

/// `bao kv get -format=json -mount=secret PATH` (optionally `-version=N`): `None` when the CLI
/// finds no live data there.
fn bao_kv_get(bao: &Bao, path: &str, version: Option<u64>) -> Option<Value> {
    let mut args = vec!["kv", "get", "-format=json", "-mount=secret"];
    let v = version.map(|n| format!("-version={n}"));
    if let Some(v) = &v {
        args.push(v);
    }
    args.push(path);
    let o = bao.cli_as(&bao.root_token, &args);
    if !o.ok {
        return None;
    }
    let v: Value = serde_json::from_str(&o.stdout).expect("bao kv get json");
    match &v["data"]["data"] {
        Value::Null => None,
        d => Some(d.clone()),
    }
}

/// `bao kv metadata get -format=json -mount=secret PATH`: `data`, or `None` when there is none.
fn bao_kv_metadata(bao: &Bao, path: &str) -> Option<Value> {
    let o = bao.cli_as(
        &bao.root_token,
        &[
            "kv",
            "metadata",
            "get",
            "-format=json",
            "-mount=secret",
            path,
        ],
    );
    if !o.ok {
        return None;
    }
    let v: Value = serde_json::from_str(&o.stdout).expect("bao kv metadata json");
    Some(v["data"].clone())
}

// ---- KV version 2 --------------------------------------------------------------------------------

#[tokio::test]
async fn kv2_round_trips_take_versions_from_the_server_and_inventory_reads_only_metadata() {
    let (bao, _dir, cfg) = dev_root().await;
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
    assert_eq!(got.value, cert("acme", 1, "b"));
    assert_eq!(got.version, "2");

    // What the server holds, read with the CLI: both versions, the document under data.data.
    let meta = bao_kv_metadata(&bao, CERT1).expect("metadata");
    assert_eq!(meta["current_version"], json!(2));
    let v1 = bao_kv_get(&bao, CERT1, Some(1)).expect("version 1 kept");
    assert_eq!(v1["password"], json!("a"));
    let latest = bao_kv_get(&bao, CERT1, None).expect("latest");
    assert_eq!(latest["password"], json!("b"));
    assert_eq!(latest["accountId"], json!("acme"));
    // KV v2 keeps no index: versions are the server's.
    assert!(bao_kv_get(&bao, "mtls-gateway/accounts/acme/index", None).is_none());

    let before = bao.audit_count("secret/data/mtls-gateway/accounts/acme/certificates/1");
    let inv = store.inventory().await.expect("inventory");
    assert_eq!(
        inv.certificates,
        vec![
            ("acme".into(), 1, "2".into()),
            ("globex".into(), 2, "1".into())
        ]
    );
    assert_eq!(
        bao.audit_count("secret/data/mtls-gateway/accounts/acme/certificates/1"),
        before,
        "an inventory reads metadata, never secret data"
    );
    assert!(bao.audit_count("secret/metadata/mtls-gateway/accounts/acme/certificates/1") >= 1);

    let doc = MappingDocument {
        mappings: vec![mapping("acme", 9, 1)],
    };
    assert_eq!(
        store
            .put_mappings("acme", &doc, Some(""))
            .await
            .expect("create"),
        "1"
    );
    let m = store.get_mappings("acme").await.expect("get");
    assert_eq!((m.value, m.version.as_str()), (doc, "1"));

    // delete_certificate removes every version and the metadata (`bao kv metadata delete`).
    assert!(store.delete_certificate("acme", 1).await.expect("delete"));
    assert!(bao_kv_metadata(&bao, CERT1).is_none());
    assert!(!store.delete_certificate("acme", 1).await.expect("again"));
}

#[tokio::test]
async fn kv2_soft_deleted_and_destroyed_latest_versions_count_as_absent_until_written_again() {
    let (bao, _dir, cfg) = dev_root().await;
    let store = VaultStore::connect(&cfg).await.expect("connect");
    store
        .put_certificate(&cert("acme", 1, "a"))
        .await
        .expect("put");
    store
        .put_certificate(&cert("acme", 1, "b"))
        .await
        .expect("put");
    store
        .put_certificate(&cert("acme", 2, "x"))
        .await
        .expect("put");

    // An operator soft-deletes the latest version.
    bao.cli(&["kv", "delete", "-mount=secret", CERT1]);
    assert!(store
        .get_certificate("acme", 1)
        .await
        .expect("get")
        .is_none());
    let inv = store.inventory().await.expect("inventory");
    assert_eq!(inv.certificates, vec![("acme".into(), 2, "1".into())]);

    // ... and takes it back.
    bao.cli(&["kv", "undelete", "-mount=secret", "-versions=2", CERT1]);
    let got = store
        .get_certificate("acme", 1)
        .await
        .expect("get")
        .expect("undeleted");
    assert_eq!(
        (got.value.secret.password.as_str(), got.version.as_str()),
        ("b", "2")
    );

    // Destroyed for good: absent, although version 1 is still there.
    bao.cli(&["kv", "destroy", "-mount=secret", "-versions=2", CERT1]);
    assert!(store
        .get_certificate("acme", 1)
        .await
        .expect("get")
        .is_none());
    assert!(bao_kv_get(&bao, CERT1, Some(1)).is_some());
    assert_eq!(
        store.inventory().await.expect("inventory").certificates,
        vec![("acme".into(), 2, "1".into())]
    );
    // Writing again makes it live with the next version.
    assert_eq!(
        store
            .put_certificate(&cert("acme", 1, "c"))
            .await
            .expect("put"),
        "3"
    );
    let got = store
        .get_certificate("acme", 1)
        .await
        .expect("get")
        .expect("live again");
    assert_eq!(
        (got.value.secret.password.as_str(), got.version.as_str()),
        ("c", "3")
    );

    // Mappings whose latest version is deleted: creating them (expected version "") follows the
    // latest version with check-and-set instead of failing.
    let doc = MappingDocument {
        mappings: vec![mapping("acme", 9, 2)],
    };
    store
        .put_mappings("acme", &doc, Some(""))
        .await
        .expect("create");
    bao.cli(&["kv", "delete", "-mount=secret", MAPPINGS]);
    let m = store.get_mappings("acme").await.expect("get");
    assert_eq!(m.version, "", "deleted mappings read as none");
    assert_eq!(
        store
            .put_mappings("acme", &doc, Some(""))
            .await
            .expect("create over a deleted version"),
        "2"
    );
}

#[tokio::test]
async fn kv2_two_writers_of_the_same_mappings_one_wins_the_other_gets_a_conflict_naming_the_entry()
{
    let (bao, _dir, cfg) = dev_root().await;
    // Two replicas, each with its own client and token.
    let a = VaultStore::connect(&cfg).await.expect("connect a");
    let b = VaultStore::connect(&cfg).await.expect("connect b");

    // Both create at once: check-and-set 0, exactly one wins.
    let doc_a = MappingDocument {
        mappings: vec![mapping("acme", 1, 1)],
    };
    let doc_b = MappingDocument {
        mappings: vec![mapping("acme", 2, 2)],
    };
    let (ra, rb) = tokio::join!(
        a.put_mappings("acme", &doc_a, Some("")),
        b.put_mappings("acme", &doc_b, Some(""))
    );
    let (winner, loser_err) = match (ra, rb) {
        (Ok(v), Err(e)) => ((doc_a.clone(), v), e),
        (Err(e), Ok(v)) => ((doc_b.clone(), v), e),
        other => panic!("exactly one writer must win: {other:?}"),
    };
    assert!(
        matches!(&loser_err, StoreError::Conflict(k) if k == "secret/mtls-gateway/accounts/acme/mappings"),
        "{loser_err}"
    );
    assert_eq!(winner.1, "1");
    let on_server = bao_kv_get(&bao, MAPPINGS, None).expect("mappings");
    assert_eq!(
        on_server["mappings"],
        serde_json::to_value(&winner.0).expect("json")["mappings"]
    );

    // Both update from the same version: again one wins, the other conflicts.
    let cur = a.get_mappings("acme").await.expect("get").version;
    let (ra, rb) = tokio::join!(
        a.put_mappings("acme", &doc_a, Some(&cur)),
        b.put_mappings("acme", &doc_b, Some(&cur))
    );
    assert!(
        ra.is_ok() != rb.is_ok(),
        "exactly one update wins: {ra:?} {rb:?}"
    );
    let err = ra.err().or(rb.err()).expect("one error");
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(
        bao_kv_metadata(&bao, MAPPINGS).expect("meta")["current_version"],
        json!(2)
    );
    // The loser re-reads and retries: that works.
    let cur = b.get_mappings("acme").await.expect("get").version;
    assert_eq!(
        b.put_mappings("acme", &doc_b, Some(&cur))
            .await
            .expect("retry"),
        "3"
    );
}

#[tokio::test]
async fn kv2_entries_seeded_and_edited_with_the_bao_cli_are_read_and_an_edit_shows_at_the_next_inventory(
) {
    let (bao, dir, cfg) = dev_root().await;
    use base64::Engine;
    let p12: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
    let b64 = dir.path().join("partner-a.p12.b64");
    std::fs::write(&b64, base64::engine::general_purpose::STANDARD.encode(&p12)).expect("write");
    // docs/vault.md, "Seeding by hand: KV version 2", typed as an operator would.
    bao.cli(&[
        "kv",
        "put",
        "-mount=secret",
        "mtls-gateway/accounts/acme/certificates/1001",
        "name=partner-a",
        "displayName=Partner A",
        &format!("p12=@{}", b64.display()),
        "password=changeit",
    ]);
    let mappings = dir.path().join("mappings.json");
    std::fs::write(
        &mappings,
        r#"{"mappings": [
  {"id": 1, "name": "idp", "serviceName": "IDP",
   "url": "https://idp.partner.example/*", "certificateId": 1001}
]}"#,
    )
    .expect("write");
    bao.cli(&[
        "kv",
        "put",
        "-mount=secret",
        "mtls-gateway/accounts/acme/mappings",
        &format!("@{}", mappings.display()),
    ]);
    let store = VaultStore::connect(&cfg).await.expect("connect");
    let first = versions(&store.inventory().await.expect("inventory"));
    assert_eq!(first.len(), 2, "{first:?}");
    let c = store
        .get_certificate("acme", 1001)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(c.value.secret.p12, p12);
    assert_eq!(c.value.secret.password, "changeit");
    assert_eq!(c.value.meta.display_name, "Partner A");
    let m = store.get_mappings("acme").await.expect("mappings");
    assert_eq!(m.value.mappings[0].certificate_id, 1001);
    assert_eq!(m.value.mappings[0].account_id, "acme");

    // An operator rotates the password in place (`bao kv patch`): only that entry's version moves.
    bao.cli(&[
        "kv",
        "patch",
        "-mount=secret",
        "mtls-gateway/accounts/acme/certificates/1001",
        "password=rotated",
    ]);
    let second = versions(&store.inventory().await.expect("inventory"));
    let changed: Vec<&String> = first
        .keys()
        .filter(|k| first.get(*k) != second.get(*k))
        .collect();
    assert_eq!(changed, vec!["acme/1001"]);
    assert_eq!(second["acme/1001"], "2");
    let c = store
        .get_certificate("acme", 1001)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (c.value.secret.password.as_str(), c.version.as_str()),
        ("rotated", "2")
    );
}

#[tokio::test]
async fn kv_version_1_configured_for_the_kv2_secret_mount_is_refused_naming_the_setting() {
    let (bao, _dir, cfg) = dev_root().await;
    let store = VaultStore::connect(&VaultConfig {
        kv: mtls_gateway::store::vault::KvVersion::V1,
        ..cfg
    })
    .await
    .expect("connect");
    let err = store.inventory().await.expect_err("mismatch");
    let msg = err.to_string();
    assert!(
        msg.contains("store.vault.kv_version is 1 but mount secret")
            && msg.contains(&bao.addr)
            && msg.contains("set store.vault.kv_version: 2"),
        "{msg}"
    );
}

// ---- AppRole ---------------------------------------------------------------------------------------

/// The read-write admin policy of docs/vault.md (KV v2 at `secret/`).
const ADMIN_POLICY: &str =
    "path \"secret/data/mtls-gateway/*\" { capabilities = [\"create\", \"update\", \"read\"] }\n\
path \"secret/metadata/mtls-gateway/*\" { capabilities = [\"list\", \"read\", \"delete\"] }\n";

/// A dev server with role `gw` (admin policy, `settings`), the role id and a secret id in files,
/// and a config logging in with them.
async fn approle(settings: &[&str]) -> (Bao, tempfile::TempDir, VaultConfig) {
    let bao = Bao::dev().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (role_id, secret_id) = bao.approle("gw", "gw-admin", ADMIN_POLICY, settings);
    let role_file = dir.path().join("role-id");
    let secret_file = dir.path().join("secret-id");
    std::fs::write(&role_file, format!("{role_id}\n")).expect("write");
    std::fs::write(&secret_file, format!("{secret_id}\n")).expect("write");
    let auth = format!(
        "  method: approle\n  role_id_file: {}\n  secret_id_file: {}\n",
        role_file.display(),
        secret_file.display()
    );
    let cfg = v2_config(&bao.addr, &auth, "");
    (bao, dir, cfg)
}

/// Audit log entries (request side) for `path`, with their times.
fn audit_times(bao: &Bao, path: &str) -> Vec<OffsetDateTime> {
    let text = std::fs::read_to_string(bao.audit_path()).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "request" && v["request"]["path"] == path)
        .map(|v| {
            OffsetDateTime::parse(v["time"].as_str().expect("audit time"), &Rfc3339)
                .expect("audit time parses")
        })
        .collect()
}

/// Responses the server refused with "permission denied" (an expired or revoked token).
fn audit_denials(bao: &Bao) -> Vec<String> {
    let text = std::fs::read_to_string(bao.audit_path()).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["type"] == "response"
                && v["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("permission denied"))
        })
        .map(|v| v["request"]["path"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn approle_renews_a_short_ttl_token_before_it_expires_and_logs_in_again_at_the_max_ttl() {
    let (bao, _dir, cfg) = approle(&["token_ttl=4s", "token_max_ttl=12s"]).await;
    let store = VaultStore::connect(&cfg).await.expect("connect");
    store
        .put_certificate(&cert("acme", 1, "pw"))
        .await
        .expect("put");
    // Steady use across more than one max TTL: every call must work.
    let started = Instant::now();
    let mut calls = 0u32;
    while started.elapsed() < Duration::from_secs(14) {
        store
            .inventory()
            .await
            .expect("inventory with a live token");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(calls > 30, "{calls}");

    let logins = audit_times(&bao, "auth/approle/login");
    let renewals = audit_times(&bao, "auth/token/renew-self");
    assert!(logins.len() >= 2, "a new login at the max TTL: {logins:?}");
    let (l1, l2) = (logins[0], logins[1]);
    let between: Vec<_> = renewals.iter().filter(|r| **r > l1 && **r < l2).collect();
    assert!(
        between.len() >= 2,
        "the first token is renewed (not replaced) while it can be: {renewals:?} between {l1} and {l2}"
    );
    assert!(
        *between[0] - l1 < time::Duration::seconds(4),
        "renewed before the 4 s TTL ran out: login {l1}, renewal {}",
        between[0]
    );
    assert!(
        l2 - l1 < time::Duration::seconds(12),
        "logged in again before the 12 s max TTL: {l1} -> {l2}"
    );
    assert!(
        audit_denials(&bao).is_empty(),
        "no request ever reached the server with an expired token: {:?}",
        audit_denials(&bao)
    );
}

#[tokio::test]
async fn approle_logs_in_again_once_when_its_token_is_revoked_and_the_retry_succeeds() {
    let (bao, _dir, cfg) = approle(&[]).await;
    let store = VaultStore::connect(&cfg).await.expect("connect");
    store
        .put_certificate(&cert("acme", 1, "pw"))
        .await
        .expect("put");
    assert_eq!(bao.audit_count("auth/approle/login"), 1);

    // Every token from AppRole logins revoked behind the gateway's back.
    bao.cli(&["token", "revoke", "-mode=path", "auth/approle/login"]);
    let inv = store
        .inventory()
        .await
        .expect("one fresh login and a retry, not an outage");
    assert_eq!(inv.certificates.len(), 1);
    assert_eq!(bao.audit_count("auth/approle/login"), 2);
    assert!(
        !audit_denials(&bao).is_empty(),
        "the revoked token was refused first"
    );
}

#[tokio::test]
async fn approle_a_rotated_secret_id_file_is_picked_up_and_a_dead_one_is_denied_naming_the_file() {
    let (bao, dir, cfg) = approle(&[]).await;
    let secret_file = dir.path().join("secret-id");
    let old = std::fs::read_to_string(&secret_file).expect("read");
    let store = VaultStore::connect(&cfg).await.expect("connect");
    store
        .put_certificate(&cert("acme", 1, "pw"))
        .await
        .expect("put");

    // The operator's rotation: a new secret id written by rename, the old one destroyed, the
    // tokens it produced revoked.
    let new = bao.new_secret_id("gw");
    let tmp = dir.path().join(".secret-id.tmp");
    std::fs::write(&tmp, format!("{new}\n")).expect("write");
    std::fs::rename(&tmp, &secret_file).expect("rename");
    bao.cli(&[
        "write",
        "auth/approle/role/gw/secret-id/destroy",
        &format!("secret_id={}", old.trim()),
    ]);
    bao.cli(&["token", "revoke", "-mode=path", "auth/approle/login"]);
    assert_eq!(
        store
            .inventory()
            .await
            .expect("logged in with the new secret id")
            .certificates
            .len(),
        1
    );
    assert_eq!(bao.audit_count("auth/approle/login"), 2);

    // A file still holding a destroyed secret id: Denied, naming the files, never the secret.
    std::fs::write(&secret_file, &old).expect("write");
    let fresh = VaultStore::connect(&cfg).await.expect("connect");
    let err = fresh.inventory().await.expect_err("login refused");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Denied(_)), "{msg}");
    assert!(
        msg.contains("approle login at auth/approle refused")
            && msg.contains(&secret_file.display().to_string())
            && msg.contains("secret_id_file"),
        "{msg}"
    );
    assert!(!msg.contains(old.trim()), "{msg}");
}

// ---- namespaces and policies --------------------------------------------------------------------

#[tokio::test]
async fn a_store_with_a_namespace_reads_and_writes_inside_that_namespace_only() {
    let (bao, _dir, cfg) = dev_root().await;
    bao.cli(&["namespace", "create", "team-a"]);
    bao.cli(&[
        "secrets",
        "enable",
        "-namespace=team-a",
        "-path=secret",
        "kv-v2",
    ]);
    bao.cli(&[
        "secrets",
        "enable",
        "-namespace=team-a",
        "-version=1",
        "-path=only-in-ns",
        "kv",
    ]);

    let in_ns = VaultStore::connect(&VaultConfig {
        namespace: Some("team-a".into()),
        ..cfg.clone()
    })
    .await
    .expect("connect");
    in_ns
        .put_certificate(&cert("acme", 1, "ns"))
        .await
        .expect("put in the namespace");
    assert_eq!(
        in_ns
            .inventory()
            .await
            .expect("inventory")
            .certificates
            .len(),
        1
    );

    // The entry is in team-a's secret/ mount, not in the root namespace's.
    let o = bao.cli_as(
        &bao.root_token,
        &[
            "kv",
            "get",
            "-format=json",
            "-namespace=team-a",
            "-mount=secret",
            CERT1,
        ],
    );
    assert!(o.ok, "{}", o.stderr);
    assert!(bao_kv_get(&bao, CERT1, None).is_none());
    let root_ns = VaultStore::connect(&cfg).await.expect("connect");
    assert!(root_ns
        .inventory()
        .await
        .expect("inventory")
        .certificates
        .is_empty());

    // A mount that exists only in the namespace: without the setting, the error says where to look.
    let err = VaultStore::connect(&VaultConfig {
        mount: "only-in-ns".into(),
        kv: mtls_gateway::store::vault::KvVersion::V1,
        ..cfg
    })
    .await
    .expect("connect")
    .inventory()
    .await
    .expect_err("no such mount in the root namespace");
    let msg = err.to_string();
    assert!(
        msg.contains("mount only-in-ns not found") && msg.contains("store.vault.namespace"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_policy_denying_one_account_names_that_path_and_the_rest_of_the_store_keeps_working() {
    let (bao, dir, cfg) = dev_root().await;
    let root = VaultStore::connect(&cfg).await.expect("connect");
    root.put_certificate(&cert("acme", 1, "pw"))
        .await
        .expect("put");
    root.put_certificate(&cert("blocked", 2, "pw"))
        .await
        .expect("put");
    let token = bao.token_with_policy(
        "gw-but-blocked",
        &format!(
            "{ADMIN_POLICY}path \"secret/data/mtls-gateway/accounts/blocked/*\" {{ capabilities = [\"deny\"] }}\n"
        ),
    );
    let f = token_file(dir.path(), "limited-token", &token);
    let store = VaultStore::connect(&v2_config(&bao.addr, &token_auth(&f), ""))
        .await
        .expect("connect");

    let err = store
        .get_certificate("blocked", 2)
        .await
        .expect_err("denied");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Denied(_)), "{msg}");
    assert!(
        msg.contains("secret/data/mtls-gateway/accounts/blocked/certificates/2")
            && msg.contains("403")
            && msg.contains("policies"),
        "{msg}"
    );
    assert!(!msg.contains(&token), "{msg}");
    let err = store
        .put_certificate(&cert("blocked", 3, "pw"))
        .await
        .expect_err("denied");
    assert!(matches!(err, StoreError::Denied(_)), "{err}");

    // Everything else works with the same token.
    let inv = store
        .inventory()
        .await
        .expect("inventory reads metadata only");
    assert_eq!(inv.certificates.len(), 2);
    assert!(store
        .get_certificate("acme", 1)
        .await
        .expect("get")
        .is_some());
    store
        .put_certificate(&cert("acme", 4, "pw"))
        .await
        .expect("put elsewhere");
}

/// A load balancer in front of Vault answers 502 (HTML) or a 503 that is not "sealed" when its
/// backend is away. A real Vault or OpenBao never sends those (its 503s are sealed or standby,
/// which the live tests cover), so this one fault is shown with a fake: a local HTTP server that
/// answers every request that way.
#[tokio::test]
async fn fake_a_proxy_answering_502_or_503_in_front_of_vault_is_unavailable_naming_the_status() {
    use axum::http::StatusCode;
    let status = std::sync::Arc::new(parking_lot::Mutex::new(StatusCode::BAD_GATEWAY));
    let s2 = status.clone();
    let app = axum::Router::new().fallback(move || {
        let code = *s2.lock();
        async move { (code, "<html><body>upstream unavailable</body></html>") }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let f = token_file(dir.path(), "token", "s.some-token");
    let store = VaultStore::connect(&v2_config(&addr, &token_auth(&f), ""))
        .await
        .expect("connect");
    let err = store.inventory().await.expect_err("502");
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("502") && m.contains("upstream unavailable")),
        "{err}"
    );
    *status.lock() = StatusCode::SERVICE_UNAVAILABLE;
    let err = store.get_certificate("acme", 1).await.expect_err("503");
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("503")),
        "{err}"
    );
    task.abort();
}

// ---- Kubernetes ---------------------------------------------------------------------------------

/// The one fake of the Kubernetes test, since no cluster runs here: a local stand-in for the API
/// server's TokenReview endpoint (`POST /apis/authentication.k8s.io/v1/tokenreviews`), which
/// OpenBao's `kubernetes` auth method calls to check the service-account JWT a login presents.
/// It accepts the JWTs in `valid` (as the service account `default/gw`) and records every JWT
/// it was asked about.
mod token_review {
    use std::collections::HashSet;
    use std::sync::Arc;

    use axum::extract::State;
    use parking_lot::Mutex;
    use serde_json::{json, Value};

    #[derive(Default)]
    pub struct Reviews {
        pub valid: HashSet<String>,
        pub asked: Vec<String>,
    }

    pub struct Responder {
        pub url: String,
        pub state: Arc<Mutex<Reviews>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Responder {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn review(
        State(st): State<Arc<Mutex<Reviews>>>,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::Json<Value> {
        let token = body["spec"]["token"].as_str().unwrap_or("").to_owned();
        let mut st = st.lock();
        st.asked.push(token.clone());
        let status = if st.valid.contains(&token) {
            json!({"authenticated": true, "audiences": body["spec"]["audiences"], "user": {
                "username": "system:serviceaccount:default:gw", "uid": "uid-gw",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:default"]}})
        } else {
            json!({"authenticated": false, "error": "token has expired"})
        };
        axum::Json(
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                          "status": status}),
        )
    }

    impl Responder {
        pub async fn start() -> Responder {
            let state = Arc::new(Mutex::new(Reviews::default()));
            let app = axum::Router::new()
                .route(
                    "/apis/authentication.k8s.io/v1/tokenreviews",
                    axum::routing::post(review),
                )
                .with_state(state.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind token review responder");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            Responder { url, state, task }
        }
    }
}

/// A projected service-account token for `default/gw` (ES256; OpenBao does not verify the
/// signature without configured keys, the TokenReview does).
fn sa_jwt(key: &boring::pkey::PKey<boring::pkey::Private>, jti: &str) -> String {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({
        "aud": ["vault"], "iat": now, "nbf": now, "exp": now + 3600, "jti": jti,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": "system:serviceaccount:default:gw",
        "kubernetes.io": {"namespace": "default",
                          "serviceaccount": {"name": "gw", "uid": "uid-gw"},
                          "pod": {"name": "gw-0", "uid": "pod-uid"}}
    });
    let pem = mtls_gateway::dev::certgen::key_to_pem(key);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&pem).expect("ec key"),
    )
    .expect("sign jwt")
}

#[tokio::test]
async fn kubernetes_login_reviews_the_token_file_and_a_rotated_file_is_used_at_the_next_login() {
    let bao = Bao::dev().await;
    let responder = token_review::Responder::start().await;
    bao.cli(&["auth", "enable", "kubernetes"]);
    // The responder is plain http on loopback; the method insists on a CA all the same.
    let ca = mtls_gateway::dev::certgen::new_ca("Cluster CA").expect("ca");
    let ca_file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(ca_file.path(), mtls_gateway::dev::certgen::to_pem(&ca.cert)).expect("write");
    bao.cli(&[
        "write",
        "auth/kubernetes/config",
        &format!("kubernetes_host={}", responder.url),
        &format!("kubernetes_ca_cert=@{}", ca_file.path().display()),
        "disable_local_ca_jwt=true",
    ]);
    let policy = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(policy.path(), ADMIN_POLICY).expect("write");
    bao.cli(&[
        "policy",
        "write",
        "gw-admin",
        &policy.path().display().to_string(),
    ]);
    bao.cli(&[
        "write",
        "auth/kubernetes/role/gw",
        "bound_service_account_names=gw",
        "bound_service_account_namespaces=default",
        "audience=vault",
        "token_policies=gw-admin",
        "token_ttl=1h",
    ]);

    let key = mtls_gateway::dev::certgen::KeyKind::EcP256
        .generate()
        .expect("key");
    let jwt1 = sa_jwt(&key, "one");
    responder.state.lock().valid.insert(jwt1.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, &jwt1).expect("write");
    let auth = format!(
        "  method: kubernetes\n  role: gw\n  token_file: {}\n",
        token_path.display()
    );
    let cfg = v2_config(&bao.addr, &auth, "");
    let store = VaultStore::connect(&cfg).await.expect("connect");
    store
        .put_certificate(&cert("acme", 1, "pw"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "put after a kubernetes login: {e} (token reviews asked: {})",
                responder.state.lock().asked.len()
            )
        });
    assert_eq!(responder.state.lock().asked, vec![jwt1.clone()]);
    assert_eq!(bao.audit_count("auth/kubernetes/login"), 1);

    // The kubelet rotates the projected token; the old one stops being valid.
    let jwt2 = sa_jwt(&key, "two");
    {
        let mut st = responder.state.lock();
        st.valid.clear();
        st.valid.insert(jwt2.clone());
    }
    let tmp = dir.path().join(".token.tmp");
    std::fs::write(&tmp, &jwt2).expect("write");
    std::fs::rename(&tmp, &token_path).expect("rename");
    // The Vault token from the first login stays valid: no new login is needed for that...
    store.inventory().await.expect("same vault token");
    assert_eq!(bao.audit_count("auth/kubernetes/login"), 1);
    // ...and the next login (here forced by a revocation) presents the rotated file.
    bao.cli(&["token", "revoke", "-mode=path", "auth/kubernetes/login"]);
    assert_eq!(
        store
            .inventory()
            .await
            .expect("new login")
            .certificates
            .len(),
        1
    );
    assert_eq!(responder.state.lock().asked.last(), Some(&jwt2));
    assert_eq!(bao.audit_count("auth/kubernetes/login"), 2);

    // A role the service account is not bound to: Denied, naming the role and the mount.
    let wrong = VaultStore::connect(&v2_config(
        &bao.addr,
        &auth.replace("role: gw", "role: other"),
        "",
    ))
    .await
    .expect("connect");
    let err = wrong.inventory().await.expect_err("no such role");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Denied(_)), "{msg}");
    assert!(
        msg.contains("role other") && msg.contains("auth/kubernetes"),
        "{msg}"
    );
    assert!(!msg.contains(&jwt2), "{msg}");
}
