//! `store.vault.auth.method: aws`. OpenBao has no `aws` auth method and no AWS account is
//! reachable here, so the login endpoint is a fake: `fake_vault_aws_login` below stands in for
//! Vault's `auth/aws/login`, checks the fields of the login body and the signed request they
//! carry (decoded from base64), counts logins, and answers with a Vault-shaped login whose token
//! is the root token of a real OpenBao dev server; every other path is passed through to that
//! server, so the store's KV requests are real. (The signature itself is checked against
//! botocore's SigV4 in `src/store/vault/aws.rs`.)
//!
//! The AWS credentials come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` set in the test
//! process: nextest runs each test in its own process, and no other test reads them.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use mtls_gateway::store::vault::{VaultConfig, VaultSettings, VaultStore};
use mtls_gateway::store::{Store, StoreError};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::bao::Bao;
use crate::vault::cert;

const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SERVER_ID: &str = "vault.test.example";

mod fake_vault_aws_login {
    use super::*;
    use axum::extract::State;
    use axum::response::{IntoResponse, Response};

    #[derive(Default)]
    pub struct Seen {
        /// Logins accepted.
        pub logins: usize,
        /// What was wrong with each refused login.
        pub problems: Vec<String>,
        /// The decoded signed headers of the last login.
        pub last_headers: Value,
    }

    pub struct Fake {
        pub url: String,
        pub seen: Arc<Mutex<Seen>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    struct St {
        upstream: String,
        token: String,
        role: String,
        server_id: Option<String>,
        lease_secs: u64,
        client: reqwest::Client,
        seen: Arc<Mutex<Seen>>,
    }

    fn b64_text(v: &Value, field: &str) -> Result<String, String> {
        let s = v[field]
            .as_str()
            .ok_or_else(|| format!("{field} missing or not a string"))?;
        let raw = B64
            .decode(s)
            .map_err(|e| format!("{field} is not base64: {e}"))?;
        String::from_utf8(raw).map_err(|_| format!("{field} is not UTF-8"))
    }

    /// The checks Vault's `aws` method makes before (and instead of) calling STS.
    fn check(st: &St, body: &Value) -> Result<Value, String> {
        if body["role"] != json!(st.role) {
            return Err(format!("role is {}, want {}", body["role"], st.role));
        }
        if body["iam_http_request_method"] != "POST" {
            return Err(format!(
                "iam_http_request_method is {}",
                body["iam_http_request_method"]
            ));
        }
        let url = b64_text(body, "iam_request_url")?;
        if url != "https://sts.amazonaws.com/" {
            return Err(format!("iam_request_url is {url}"));
        }
        let req_body = b64_text(body, "iam_request_body")?;
        if req_body != "Action=GetCallerIdentity&Version=2011-06-15" {
            return Err(format!("iam_request_body is {req_body}"));
        }
        let headers: Value = serde_json::from_str(&b64_text(body, "iam_request_headers")?)
            .map_err(|e| format!("iam_request_headers is not JSON: {e}"))?;
        let obj = headers
            .as_object()
            .ok_or("iam_request_headers is not a JSON object")?;
        for (k, v) in obj {
            let ok = v
                .as_array()
                .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string));
            if !ok {
                return Err(format!("header {k} is not an array of strings: {v}"));
            }
        }
        let first = |name: &str| -> Option<String> {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v[0].as_str().map(str::to_owned))
        };
        if first("host").as_deref() != Some("sts.amazonaws.com") {
            return Err(format!("host header is {:?}", first("host")));
        }
        let ct = first("content-type").unwrap_or_default();
        if !ct.starts_with("application/x-www-form-urlencoded") {
            return Err(format!("content-type is {ct}"));
        }
        let auth = first("authorization").ok_or("no authorization header")?;
        if !auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
            || !auth.contains("/us-east-1/sts/aws4_request")
        {
            return Err(format!(
                "authorization has the wrong credential scope: {auth}"
            ));
        }
        let signed: Vec<&str> = auth
            .split("SignedHeaders=")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .ok_or("authorization has no SignedHeaders=")?
            .split(';')
            .collect();
        let mut want = vec!["host", "x-amz-date", "content-type"];
        if st.server_id.is_some() {
            want.push("x-vault-aws-iam-server-id");
        }
        for w in want {
            if !signed.contains(&w) {
                return Err(format!("{w} is not among SignedHeaders={signed:?}"));
            }
        }
        if first("x-vault-aws-iam-server-id") != st.server_id {
            return Err(format!(
                "x-vault-aws-iam-server-id is {:?}, want {:?}",
                first("x-vault-aws-iam-server-id"),
                st.server_id
            ));
        }
        if auth.contains(SECRET_KEY) || headers.to_string().contains(SECRET_KEY) {
            return Err("the secret key itself was sent".into());
        }
        Ok(headers)
    }

    /// The body is read as bytes: vaultrs sends JSON without a content type.
    async fn login(State(st): State<Arc<St>>, raw: bytes::Bytes) -> Response {
        let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        match check(&st, &body) {
            Ok(headers) => {
                let mut seen = st.seen.lock();
                seen.logins += 1;
                seen.last_headers = headers;
                axum::Json(json!({
                    "request_id": "fake", "lease_id": "", "renewable": false, "lease_duration": 0,
                    "data": null, "wrap_info": null, "warnings": null, "auth": {
                    "client_token": st.token, "accessor": "fake-accessor",
                    "policies": ["default"], "token_policies": ["default"],
                    "metadata": {"account_id": "123456789012", "auth_type": "iam"},
                    "lease_duration": st.lease_secs, "renewable": false,
                    "entity_id": "", "token_type": "service", "orphan": true}}))
                .into_response()
            }
            Err(problem) => {
                st.seen.lock().problems.push(problem.clone());
                (
                    http::StatusCode::BAD_REQUEST,
                    axum::Json(json!({"errors": [problem]})),
                )
                    .into_response()
            }
        }
    }

    /// Everything but the login goes to the real server.
    async fn pass(State(st): State<Arc<St>>, req: axum::extract::Request) -> Response {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 64 << 20)
            .await
            .unwrap_or_default();
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let mut rb = st
            .client
            .request(parts.method.clone(), format!("{}{pq}", st.upstream))
            .body(bytes.to_vec());
        for (k, v) in &parts.headers {
            if k != http::header::HOST && k != http::header::CONTENT_LENGTH {
                rb = rb.header(k, v);
            }
        }
        match rb.send().await {
            Ok(r) => {
                let status = r.status();
                let ct = r.headers().get(http::header::CONTENT_TYPE).cloned();
                let b = r.bytes().await.unwrap_or_default();
                let mut resp = Response::new(axum::body::Body::from(b));
                *resp.status_mut() = status;
                if let Some(ct) = ct {
                    resp.headers_mut().insert(http::header::CONTENT_TYPE, ct);
                }
                resp
            }
            Err(e) => (http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        }
    }

    pub async fn start(bao: &Bao, role: &str, server_id: Option<&str>, lease_secs: u64) -> Fake {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let st = Arc::new(St {
            upstream: bao.addr.trim_end_matches('/').to_owned(),
            token: bao.root_token.clone(),
            role: role.to_owned(),
            server_id: server_id.map(str::to_owned),
            lease_secs,
            client: reqwest::Client::new(),
            seen: seen.clone(),
        });
        let app = axum::Router::new()
            .route("/v1/auth/aws/login", axum::routing::post(login))
            .fallback(pass)
            .with_state(st);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake aws login");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake { url, seen, task }
    }
}

fn aws_config(addr: &str, auth: &str) -> VaultConfig {
    let yaml = format!(
        "address: {addr}\nkv_version: 2\nmount: secret\nprefix: mtls-gateway\n\
         request_timeout_ms: 3000\nauth:\n{auth}"
    );
    let s: VaultSettings = serde_yaml::from_str(&yaml).expect("test config parses");
    s.validate("store.vault").expect("test config validates")
}

/// Static credentials for this test process only (see the module comment); no instance
/// metadata lookups.
fn set_test_credentials() {
    for v in [
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    ] {
        std::env::remove_var(v);
    }
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
}

#[tokio::test]
async fn aws_login_sends_a_signed_get_caller_identity_with_the_server_id_and_logs_in_again_before_the_lease_ends(
) {
    set_test_credentials();
    let bao = Bao::dev().await;
    let fake = fake_vault_aws_login::start(&bao, "gw", Some(SERVER_ID), 2).await;
    let cfg = aws_config(
        &fake.url,
        &format!("  method: aws\n  role: gw\n  iam_server_id_header_value: {SERVER_ID}\n"),
    );
    let store = VaultStore::connect(&cfg).await.expect("connect");
    store
        .put_certificate(&cert("acme", 1, "pw"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "put after an aws login: {e} (refused logins: {:?})",
                fake.seen.lock().problems
            )
        });
    {
        let seen = fake.seen.lock();
        assert_eq!(seen.problems, Vec::<String>::new());
        assert_eq!(seen.logins, 1);
        assert_eq!(seen.last_headers["x-vault-aws-iam-server-id"][0], SERVER_ID);
    }
    // The login's lease is 2 s and not renewable: the store logs in again at 2/3 of it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let inv = store.inventory().await.expect("inventory after re-login");
    assert!(!format!("{inv:?}").is_empty());
    let seen = fake.seen.lock();
    assert!(seen.logins >= 2, "logins: {}", seen.logins);
    assert_eq!(seen.problems, Vec::<String>::new());
}

#[tokio::test]
async fn aws_login_refused_names_the_role_and_settings_and_never_the_secret_key() {
    set_test_credentials();
    let bao = Bao::dev().await;
    // The fake knows role gw without a server-id header; the store asks for role other.
    let fake = fake_vault_aws_login::start(&bao, "gw", None, 60).await;
    let cfg = aws_config(&fake.url, "  method: aws\n  role: other\n");
    let err = match VaultStore::connect(&cfg).await {
        Err(e) => e,
        Ok(store) => store
            .put_certificate(&cert("acme", 1, "pw"))
            .await
            .expect_err("login refused"),
    };
    assert!(matches!(err, StoreError::Denied(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("aws iam login at auth/aws as role other"),
        "{msg}"
    );
    assert!(msg.contains("auth/aws/role/other"), "{msg}");
    assert!(msg.contains("iam_server_id_header_value"), "{msg}");
    assert!(!msg.contains(SECRET_KEY), "{msg}");
    let seen = fake.seen.lock();
    assert_eq!(seen.logins, 0);
    assert!(!seen.problems.is_empty());
}

#[tokio::test]
async fn aws_login_takes_credentials_from_a_shared_credentials_file_profile() {
    set_test_credentials();
    std::env::remove_var("AWS_ACCESS_KEY_ID");
    std::env::remove_var("AWS_SECRET_ACCESS_KEY");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        format!(
            "[default]\naws_access_key_id = WRONGKEY\naws_secret_access_key = x\n\n\
             [gateway]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .expect("write credentials");
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &file);
    std::env::set_var("AWS_CONFIG_FILE", dir.path().join("no-config"));
    std::env::set_var("AWS_PROFILE", "gateway");
    let bao = Bao::dev().await;
    let fake = fake_vault_aws_login::start(&bao, "gw", None, 60).await;
    let cfg = aws_config(&fake.url, "  method: aws\n  role: gw\n");
    let store = VaultStore::connect(&cfg).await.expect("connect");
    store.inventory().await.unwrap_or_else(|e| {
        panic!(
            "inventory after a login with profile credentials: {e} ({:?})",
            fake.seen.lock().problems
        )
    });
    assert_eq!(fake.seen.lock().logins, 1);
}

#[tokio::test]
async fn aws_login_without_any_credentials_is_unavailable_naming_where_they_are_looked_for() {
    set_test_credentials();
    std::env::remove_var("AWS_ACCESS_KEY_ID");
    std::env::remove_var("AWS_SECRET_ACCESS_KEY");
    let dir = tempfile::tempdir().expect("tempdir");
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"));
    std::env::set_var("AWS_CONFIG_FILE", dir.path().join("none"));
    let bao = Bao::dev().await;
    let fake = fake_vault_aws_login::start(&bao, "gw", None, 60).await;
    let cfg = aws_config(&fake.url, "  method: aws\n  role: gw\n");
    let err = match VaultStore::connect(&cfg).await {
        Err(e) => e,
        Ok(store) => store.inventory().await.expect_err("no credentials"),
    };
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let msg = err.to_string();
    for want in [
        "no AWS credentials",
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_ROLE_ARN",
    ] {
        assert!(msg.contains(want), "{want} not in: {msg}");
    }
    let seen = fake.seen.lock();
    assert_eq!(
        (seen.logins, seen.problems.len()),
        (0, 0),
        "vault was asked"
    );
}

/// Container credentials (ECS task roles, EKS Pod Identity): a local responder stands in for the
/// container credentials endpoint (a fake: no ECS here). It checks the authorization token and
/// answers the credentials the login is then signed with (the fake Vault checks the signature's
/// key id and a session token).
#[tokio::test]
async fn aws_login_takes_container_credentials_with_the_authorization_token() {
    set_test_credentials();
    std::env::remove_var("AWS_ACCESS_KEY_ID");
    std::env::remove_var("AWS_SECRET_ACCESS_KEY");
    let dir = tempfile::tempdir().expect("tempdir");
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"));
    std::env::set_var("AWS_CONFIG_FILE", dir.path().join("none"));
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "pod-identity-token\n").expect("token file");
    let asked = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = asked.clone();
    let app = axum::Router::new().route(
        "/v1/credentials",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                seen.lock().push(auth.clone());
                if auth != "pod-identity-token" {
                    return (axum::http::StatusCode::FORBIDDEN, String::new());
                }
                (
                    axum::http::StatusCode::OK,
                    json!({"AccessKeyId": "AKIDEXAMPLE", "SecretAccessKey": SECRET_KEY,
                           "Token": "session-from-the-container", "Expiration": "2099-01-01T00:00:00Z"})
                    .to_string(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    std::env::set_var(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        format!("http://{addr}/v1/credentials"),
    );
    std::env::set_var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file);
    let bao = Bao::dev().await;
    let fake = fake_vault_aws_login::start(&bao, "gw", None, 60).await;
    let cfg = aws_config(&fake.url, "  method: aws\n  role: gw\n");
    let store = VaultStore::connect(&cfg).await.expect("connect");
    store.inventory().await.unwrap_or_else(|e| {
        panic!(
            "inventory after a login with container credentials: {e} ({:?})",
            fake.seen.lock().problems
        )
    });
    assert_eq!(fake.seen.lock().logins, 1);
    {
        let seen = fake.seen.lock();
        assert_eq!(
            seen.last_headers["x-amz-security-token"][0], "session-from-the-container",
            "the container's session token signs the login"
        );
    }
    assert_eq!(asked.lock().as_slice(), ["pod-identity-token".to_string()]);

    // Plain http to anything but loopback or the container endpoints is refused, naming why.
    std::env::set_var(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "http://credentials.example.com/v1/credentials",
    );
    let err = match VaultStore::connect(&cfg).await {
        Err(e) => e,
        Ok(store) => store.inventory().await.expect_err("refused endpoint"),
    };
    assert!(err.to_string().contains("use https"), "{err}");
    server.abort();
}
