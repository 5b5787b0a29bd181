//! AWS IAM login (`store.vault.auth.method: aws`): the gateway signs an `sts:GetCallerIdentity`
//! request with its AWS credentials (SigV4, through `reqsign`) and hands the signed request to
//! Vault's `auth/{mount}/login`; Vault replays it to STS and maps the caller to a role.
//!
//! Credentials come from `reqsign`'s default chain, in this order: environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), the shared config and
//! credentials files (`AWS_PROFILE`, `AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE`), a web
//! identity token (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`: IRSA on EKS), container
//! credentials (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` / `_FULL_URI`: ECS task roles, EKS Pod
//! Identity; read here, since reqsign 0.16 has no loader for them), and EC2 instance metadata
//! (IMDSv2). A loader is made for each login, so every login reads the sources again
//! (a rotated credentials file or web identity token is used at the next login).
//!
//! No secret (secret key, session token, signature) is logged: [`SignedRequest`]'s `Debug`
//! redacts `Authorization` and `X-Amz-Security-Token`.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::config::Secret;

/// The body of every `sts:GetCallerIdentity` login request.
pub const GET_CALLER_IDENTITY_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
/// The content type Vault's own client (and the AWS SDKs) send with it.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// The header that binds a login to one Vault server (`iam_server_id_header_value`).
pub const SERVER_ID_HEADER: &str = "x-vault-aws-iam-server-id";

/// AWS credentials for one signature. `Debug` never shows the secret parts.
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A signed `sts:GetCallerIdentity` request, as Vault's login wants it.
#[derive(Clone)]
pub struct SignedRequest {
    pub method: String,
    pub url: String,
    pub body: String,
    /// Lower-case header names with their values, in the order signed.
    pub headers: Vec<(String, String)>,
}

impl fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let shown = if k == "authorization" || k == "x-amz-security-token" {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("SignedRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("body", &self.body)
            .field("headers", &headers)
            .finish()
    }
}

impl SignedRequest {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `iam_request_headers`: base64 of the JSON object of the signed headers, each value an
    /// array of strings (the form Vault's API documents).
    pub fn headers_b64(&self) -> String {
        let mut map = serde_json::Map::new();
        for (k, v) in &self.headers {
            let entry = map
                .entry(k.clone())
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(a) = entry {
                a.push(serde_json::Value::String(v.clone()));
            }
        }
        B64.encode(serde_json::Value::Object(map).to_string())
    }

    pub fn url_b64(&self) -> String {
        B64.encode(&self.url)
    }

    pub fn body_b64(&self) -> String {
        B64.encode(&self.body)
    }
}

/// Signs `sts:GetCallerIdentity` for `endpoint` in `region` with SigV4 (service `sts`), adding
/// `X-Vault-AWS-IAM-Server-ID` (signed) when `server_id` is set. The signing time is now:
/// reqsign 0.16 only lets its own tests fix it, so callers that compare signatures take the
/// time from the `x-amz-date` header of the result.
///
/// The payload hash is sent as `X-Amz-Content-Sha256` (reqsign would otherwise sign
/// `UNSIGNED-PAYLOAD`, which STS does not accept).
pub fn sign_get_caller_identity(
    creds: &AwsCredentials,
    region: &str,
    endpoint: &str,
    server_id: Option<&str>,
) -> Result<SignedRequest, String> {
    let body = GET_CALLER_IDENTITY_BODY;
    let mut builder = http::Request::builder()
        .method(http::Method::POST)
        .uri(endpoint)
        .header(http::header::CONTENT_TYPE, FORM_CONTENT_TYPE)
        .header("x-amz-content-sha256", hex::encode(Sha256::digest(body)));
    if let Some(id) = server_id {
        builder = builder.header(SERVER_ID_HEADER, id);
    }
    let mut req = builder
        .body(())
        .map_err(|e| format!("cannot build the sts request for {endpoint}: {e}"))?;
    let cred = reqsign::AwsCredential {
        access_key_id: creds.access_key_id.clone(),
        secret_access_key: creds.secret_access_key.expose().to_owned(),
        session_token: creds.session_token.as_ref().map(|s| s.expose().to_owned()),
        expires_in: None,
    };
    reqsign::AwsV4Signer::new("sts", region)
        .sign(&mut req, &cred)
        .map_err(|e| format!("cannot sign the sts request: {e}"))?;
    let mut headers = Vec::new();
    for (k, v) in req.headers() {
        let v = v
            .to_str()
            .map_err(|_| format!("signed header {k} is not text"))?;
        headers.push((k.as_str().to_owned(), v.to_owned()));
    }
    Ok(SignedRequest {
        method: "POST".to_owned(),
        url: endpoint.to_owned(),
        body: body.to_owned(),
        headers,
    })
}

/// The credential chain for one login: reqsign's default chain (environment, profiles, web
/// identity), then container credentials (ECS task roles, EKS Pod Identity: reqsign 0.16 names
/// them but has no loader for them, so they are read here), then EC2 instance metadata (reqsign).
pub(crate) struct Loader {
    /// Environment, profiles, web identity (instance metadata switched off: it comes last).
    first: reqsign::AwsDefaultLoader,
    /// Instance metadata (IMDSv2), after the container.
    imds: reqsign::AwsDefaultLoader,
    client: reqwest::Client,
}

impl Loader {
    pub(crate) fn new(region: &str) -> Result<Loader, String> {
        let mut config = reqsign::AwsConfig::default().from_env().from_profile();
        if config.region.is_none() {
            config.region = Some(region.to_owned());
        }
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the http client for AWS credentials: {e}"))?;
        Ok(Loader {
            first: reqsign::AwsDefaultLoader::new(client.clone(), config.clone())
                .with_disable_ec2_metadata(),
            imds: reqsign::AwsDefaultLoader::new(client.clone(), config),
            client,
        })
    }

    pub(crate) async fn load(&self) -> Result<AwsCredentials, String> {
        let found = match self.first.load().await {
            Ok(Some(c)) => Some(c),
            Ok(None) => None,
            // reqsign's errors name the source that failed, never the secret.
            Err(e) => return Err(format!("loading AWS credentials failed: {e:#}")),
        };
        if let Some(c) = found {
            return Ok(AwsCredentials {
                access_key_id: c.access_key_id,
                secret_access_key: Secret::new(c.secret_access_key),
                session_token: c.session_token.map(Secret::new),
            });
        }
        if let Some(c) = container_credentials(&self.client).await? {
            return Ok(c);
        }
        match self.imds.load().await {
            Ok(Some(c)) => Ok(AwsCredentials {
                access_key_id: c.access_key_id,
                secret_access_key: Secret::new(c.secret_access_key),
                session_token: c.session_token.map(Secret::new),
            }),
            Ok(None) => Err("no AWS credentials found: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, a profile (AWS_PROFILE / ~/.aws/credentials), IRSA \
                 (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), container credentials \
                 (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI, as ECS sets them), or \
                 run on EC2 with an instance role"
                .to_owned()),
            Err(e) => Err(format!("loading AWS credentials failed: {e:#}")),
        }
    }
}

/// The ECS task-role endpoint (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is a path on it).
const ECS_ENDPOINT: &str = "http://169.254.170.2";

/// Container credentials, as the AWS SDKs read them: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`
/// (a path on the ECS endpoint) or `AWS_CONTAINER_CREDENTIALS_FULL_URI` (https anywhere; http
/// only to the ECS or EKS Pod Identity endpoints or loopback, as the SDKs allow), with
/// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or `AWS_CONTAINER_AUTHORIZATION_TOKEN` sent as
/// `Authorization`. The answer is `{"AccessKeyId", "SecretAccessKey", "Token", ...}`. `Ok(None)`:
/// neither variable is set.
async fn container_credentials(client: &reqwest::Client) -> Result<Option<AwsCredentials>, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let url = if let Some(rel) = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        format!("{ECS_ENDPOINT}{rel}")
    } else if let Some(full) = env("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        let u = url::Url::parse(&full).map_err(|e| {
            format!("AWS_CONTAINER_CREDENTIALS_FULL_URI is not a URL ({e}); set an http(s) URL")
        })?;
        let allowed_http = match u.host() {
            Some(url::Host::Ipv4(ip)) => {
                ip.is_loopback()
                    || ip == std::net::Ipv4Addr::new(169, 254, 170, 2)
                    || ip == std::net::Ipv4Addr::new(169, 254, 170, 23)
            }
            Some(url::Host::Ipv6(ip)) => {
                ip.is_loopback() || ip.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23]
            }
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        match u.scheme() {
            "https" => {}
            "http" if allowed_http => {}
            _ => {
                return Err(format!(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI {full:?}: plain http is allowed only to loopback, 169.254.170.2, 169.254.170.23 or fd00:ec2::23; use https"
                ))
            }
        }
        full
    } else {
        return Ok(None);
    };
    let token = match env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Some(f) => Some(
            std::fs::read_to_string(&f)
                .map_err(|e| format!("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {f}: {e}"))?
                .trim()
                .to_string(),
        ),
        None => env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
    };
    let mut req = client.get(&url);
    if let Some(t) = token {
        req = req.header("Authorization", t);
    }
    // The URL may carry no secret, but the answer does: neither is logged.
    let resp = req
        .send()
        .await
        .map_err(|e| format!("container credentials from {url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!(
            "container credentials from {url}: answered {status}; check the task role (ECS) or the pod identity association (EKS)"
        ));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        access_key_id: String,
        secret_access_key: String,
        token: Option<String>,
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("container credentials from {url}: {e}"))?;
    let a: Answer = serde_json::from_slice(&bytes).map_err(|e| {
        format!("container credentials from {url}: not the expected JSON (AccessKeyId, SecretAccessKey, Token): {e}")
    })?;
    Ok(Some(AwsCredentials {
        access_key_id: a.access_key_id,
        secret_access_key: Secret::new(a.secret_access_key),
        session_token: a.token.map(Secret::new),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: token.map(Secret::new),
        }
    }

    /// Signs the same request with botocore's SigV4 (tests/sigv4_botocore.py) at the time the
    /// gateway's signature carries, and returns its Authorization header.
    fn botocore_authorization(
        c: &AwsCredentials,
        region: &str,
        signed: &SignedRequest,
    ) -> Option<String> {
        let presign: Vec<(String, String)> = signed
            .headers
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "authorization" | "x-amz-date" | "x-amz-security-token"
                )
            })
            .cloned()
            .collect();
        let input = serde_json::json!({
            "access_key_id": c.access_key_id,
            "secret_access_key": c.secret_access_key.expose(),
            "session_token": c.session_token.as_ref().map(|s| s.expose()),
            "region": region,
            "url": signed.url,
            "body": signed.body,
            "headers": presign,
            "amz_date": signed.header("x-amz-date"),
        });
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sigv4_botocore.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.to_string().as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("python3 ran");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No module named 'botocore'") {
            return None;
        }
        assert!(out.status.success(), "sigv4_botocore.py failed: {stderr}");
        Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn check_against_botocore(c: AwsCredentials, region: &str, endpoint: &str, id: Option<&str>) {
        let signed = sign_get_caller_identity(&c, region, endpoint, id).expect("signed");
        let ours = signed.header("authorization").expect("authorization");
        let Some(theirs) = botocore_authorization(&c, region, &signed) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "botocore is not installed (python3 -m pip install botocore)"
            );
            eprintln!("skipping: botocore not installed");
            return;
        };
        assert_eq!(
            ours, theirs,
            "signature differs from botocore's for {signed:?}"
        );
        // The comparison is not vacuous: another secret key gives botocore another signature.
        let mut other = c.clone();
        other.secret_access_key = Secret::new("another-secret-key");
        let differs = botocore_authorization(&other, region, &signed).expect("botocore");
        assert_ne!(ours, differs);
    }

    #[test]
    fn aws_signature_equals_botocore_sigv4_for_the_same_request_and_time() {
        check_against_botocore(creds(None), "us-east-1", "https://sts.amazonaws.com/", None);
        check_against_botocore(
            creds(None),
            "us-east-1",
            "https://sts.amazonaws.com/",
            Some("vault.example.com"),
        );
        check_against_botocore(
            creds(Some("FwoGZXIvYXdzEXAMPLESESSIONTOKEN")),
            "eu-west-1",
            "https://sts.eu-west-1.amazonaws.com/",
            Some("vault.example.com"),
        );
    }

    #[test]
    fn aws_signed_request_has_the_headers_vault_needs_and_debug_hides_secrets() {
        let s = sign_get_caller_identity(
            &creds(Some("SESSIONTOKENSECRET")),
            "us-east-1",
            "https://sts.amazonaws.com/",
            Some("vault.example.com"),
        )
        .expect("signed");
        assert_eq!(s.header("host"), Some("sts.amazonaws.com"));
        assert_eq!(s.header("content-type"), Some(FORM_CONTENT_TYPE));
        assert_eq!(s.header(SERVER_ID_HEADER), Some("vault.example.com"));
        let auth = s.header("authorization").expect("authorization");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(auth.contains("/us-east-1/sts/aws4_request"), "{auth}");
        for h in [
            "host",
            "x-amz-date",
            SERVER_ID_HEADER,
            "x-amz-security-token",
        ] {
            assert!(auth.contains(h), "{h} not signed: {auth}");
        }
        let shown = format!("{s:?} {:?}", creds(Some("SESSIONTOKENSECRET")));
        assert!(!shown.contains("SESSIONTOKENSECRET"), "{shown}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(!shown.contains("Signature="), "{shown}");
        let h: serde_json::Value =
            serde_json::from_slice(&B64.decode(s.headers_b64()).expect("b64")).expect("json");
        assert_eq!(h["x-vault-aws-iam-server-id"][0], "vault.example.com");
        assert_eq!(
            B64.decode(s.url_b64()).expect("b64"),
            b"https://sts.amazonaws.com/"
        );
        assert_eq!(
            B64.decode(s.body_b64()).expect("b64"),
            GET_CALLER_IDENTITY_BODY.as_bytes()
        );
    }
}
