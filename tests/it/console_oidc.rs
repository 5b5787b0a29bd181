//! Single sign-on into the console through a real OpenID Connect provider: panva's
//! `oidc-provider` (tests/node/oidc_provider.mjs, installed by `.ci/setup` from the npm registry),
//! driven in headless Chromium by tests/console_oidc_browser.py. The gateway runs the
//! authorization code flow with PKCE and accepts the provider's id token only because its
//! `auth.jwt` (RS256, the provider's public key, issuer, audience = the client id) accepts it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The provider, killed on drop.
struct Provider(Child);

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_provider(dir: &Path, port: u16, redirect: &str, key: &Path, secret: &str) -> Provider {
    let script = repo().join("tests/node/oidc_provider.mjs");
    assert!(
        repo()
            .join("tests/node/node_modules/oidc-provider")
            .is_dir(),
        "the OpenID Connect provider is not installed: run `bash .ci/setup` (npm ci in tests/node)"
    );
    let log = std::fs::File::create(dir.join("provider.log")).expect("provider log");
    let child = Command::new("node")
        .arg(&script)
        .env("OIDC_PORT", port.to_string())
        .env("OIDC_REDIRECT", redirect)
        .env("OIDC_CLIENT_SECRET", secret)
        .env("OIDC_KEY_PEM", key)
        .env("OIDC_ACCOUNT", "acc")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start node (install Node.js: bash .ci/setup)");
    let p = Provider(child);
    let url = format!("http://127.0.0.1:{port}/.well-known/openid-configuration");
    wait_for(
        "the OpenID Connect provider",
        Duration::from_secs(20),
        || blocking_get(&url).ok().filter(|r| r.0 == 200),
    );
    p
}

#[test]
fn console_oidc_sign_in_through_a_real_provider_in_chromium() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("op-key.pem");
    let public = dir.path().join("op-pub.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        key.to_str().expect("utf-8 path"),
    ]);
    openssl(&[
        "pkey",
        "-in",
        key.to_str().expect("utf-8 path"),
        "-pubout",
        "-out",
        public.to_str().expect("utf-8 path"),
    ]);
    let client_secret = "console-client-secret-of-the-test-4242";
    let secret_file = dir.path().join("oidc-client-secret");
    std::fs::write(&secret_file, client_secret).expect("secret file");
    let op_port = free_port();
    let issuer = format!("http://127.0.0.1:{op_port}");
    let extra = format!(
        "admin:\n  listen: \"127.0.0.1:{{admin}}\"\n  console:\n    enabled: true\n    oidc:\n      issuer: {issuer}\n      client_id: mtls-console\n      client_secret_file: {}\n      redirect_url: http://127.0.0.1:{{admin}}/console/oidc/callback\n      label: Sign in with the test provider\nauth:\n  jwt:\n    algorithm: RS256\n    public_key_file: {}\n    issuer: {issuer}\n    audience: mtls-console\n",
        secret_file.display(),
        public.display()
    );
    let gw = Gw::start(dir.path(), &pki.ca_path, &extra);
    let base = format!("http://{}", gw.admin);
    let _op = start_provider(
        dir.path(),
        op_port,
        &format!("{base}/console/oidc/callback"),
        &key,
        client_secret,
    );

    let out = Command::new("python3")
        .arg(repo().join("tests/console_oidc_browser.py"))
        .env("CONSOLE_URL", &base)
        .env("OIDC_URL", &issuer)
        .env("CONSOLE_ACCOUNT", "acc")
        .env("CONSOLE_SCREENSHOTS", crate::console::screenshot_dir())
        .output()
        .expect("run python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the browser flow failed:\n{text}\n--- provider:\n{}\n--- gateway:\n{}",
        std::fs::read_to_string(dir.path().join("provider.log")).unwrap_or_default(),
        gw.logs()
    );
    assert!(text.contains("PASS sso sign-in"), "{text}");
    // Nothing of the exchange is logged: not the client secret, not a token.
    let logs = gw.logs();
    assert!(!logs.contains(client_secret), "client secret in the log");
    assert!(!logs.contains("eyJ"), "a token in the log:\n{logs}");
    assert!(
        logs.contains("\"console_sign_in\"") && logs.contains("\"oidc\""),
        "no audit line for the sign-in:\n{logs}"
    );
}
