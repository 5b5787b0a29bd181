//! The console's pages checked in headless Chromium for accessibility (axe-core, the engine
//! behind Lighthouse and most audit tools: every WCAG 2.1 A and AA rule it runs), for keyboard use
//! (the skip link first, "Test this mapping" reached and pressed with the keyboard alone), and
//! without JavaScript (the read pages, sign-in and the PKCS#12 tester's fallback path). Run by
//! tests/console_a11y.py; axe-core comes from the npm registry (tests/node, `.ci/setup`).

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

const SECRET: &str = "console-a11y-hs256-secret-0123456789abcdef";

fn token(account: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "a11y-user", "iss": "https://idp.test", "aud": "mtls-gateway",
                            "exp": now + 3600, "accountId": account}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

#[test]
fn console_pages_pass_axe_work_by_keyboard_and_without_javascript() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let pki = Pki::new();
    let echo = pki.echo();
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = Seed::new(dir.path());
    seed.cert("acc", 11, &pki.client("a11y-client"));
    seed.mappings(
        "acc",
        &[(
            21,
            "TEST_SERVICE",
            &format!("https://localhost:{}/*", echo.addr.port()),
            11,
        )],
    );
    let issued = pki.client("upload-client");
    let p12 = mtls_gateway::dev::certgen::to_p12(&issued.cert, &issued.key, &[], "upload-pw-4411")
        .expect("p12");
    let p12_path = dir.path().join("upload.p12");
    std::fs::write(&p12_path, p12).expect("write p12");
    let extra = format!(
        "admin:\n  listen: \"127.0.0.1:{{admin}}\"\n  console:\n    enabled: true\nauth:\n  jwt:\n    algorithm: HS256\n    secret: \"{SECRET}\"\n    issuer: https://idp.test\n    audience: mtls-gateway\n"
    );
    let gw = Gw::start(dir.path(), &pki.ca_path, &extra);
    let out = Command::new("python3")
        .arg(repo.join("tests/console_a11y.py"))
        .env("CONSOLE_URL", format!("http://{}", gw.admin))
        .env("CONSOLE_TOKEN", token("acc"))
        .env("CONSOLE_ACCOUNT", "acc")
        .env("CONSOLE_CERT_ID", "11")
        .env("CONSOLE_MAPPING_ID", "21")
        .env("CONSOLE_P12", &p12_path)
        .env("CONSOLE_P12_PASSWORD", "upload-pw-4411")
        .env(
            "AXE_JS",
            repo.join("tests/node/node_modules/axe-core/axe.min.js"),
        )
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
        "the accessibility run failed:\n{text}\n--- gateway:\n{}",
        gw.logs()
    );
    for check in [
        "PASS axe",
        "PASS keyboard",
        "PASS without JavaScript: read pages",
        "PASS without JavaScript: tester",
    ] {
        assert!(text.contains(check), "missing {check:?}:\n{text}");
    }
    assert!(
        !gw.logs().contains("upload-pw-4411"),
        "a password in the log"
    );
}
