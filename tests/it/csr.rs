//! `lifecycle::keys` against independent tools: CSRs checked and signed by the `openssl` CLI,
//! the completed PKCS#12 read by `openssl pkcs12` (openssl 3, without `-legacy`) and by Java's
//! `keytool`. Requires the `openssl` 3 CLI and `keytool` (Debian: `default-jre-headless`, which
//! `.ci/setup` installs); a missing tool fails the test rather than skipping it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mtls_gateway::dev::certgen;
use mtls_gateway::lifecycle::keys::{self, KeyError};
use mtls_gateway::store::{KeyType, SubjectSpec};

const PASS_VAR: &str = "MTLS_GATEWAY_CSR_TEST_PASS";

fn subject() -> SubjectSpec {
    SubjectSpec {
        common_name: "client-a".into(),
        organization: Some("Example Org".into()),
        organizational_unit: Some("Payments".into()),
        country: Some("DE".into()),
        state: None,
        locality: Some("Berlin".into()),
        dns_names: vec!["client-a.example.com".into(), "*.svc.example.com".into()],
        ip_addresses: vec!["192.0.2.10".into(), "2001:db8::1".into()],
        emails: vec!["ops@example.com".into()],
        uris: vec!["spiffe://example.org/ns/a/sa/client".into()],
    }
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn openssl() -> Command {
    Command::new("openssl")
}

/// `keytool` on PATH, else under $JAVA_HOME; a missing keytool fails the test.
fn keytool() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("JAVA_HOME") {
        dirs.push(Path::new(&home).join("bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("keytool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "keytool not found on PATH or in $JAVA_HOME/bin: install a Java runtime \
                 (`apt-get install -y default-jre-headless`, which .ci/setup does)"
            )
        })
}

fn write(dir: &Path, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write temp file");
    p
}

/// A CA made with the `openssl` CLI: (certificate path, key path).
fn openssl_ca(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    run(openssl()
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:P-256")
        .args(["-nodes", "-days", "30", "-subj", "/CN=CSR Test CA/O=Test"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    (cert, key)
}

/// Signs `csr_pem` with the CA using `openssl x509 -req`: the CSR's extensions copied, plus
/// clientAuth. Returns the leaf PEM and its serial (lower-case hex, as keytool prints it).
fn openssl_sign(dir: &Path, ca: &(PathBuf, PathBuf), csr_pem: &str, serial: &str) -> String {
    let csr = write(dir, "sign.csr", csr_pem);
    let ext = write(
        dir,
        "ext.cnf",
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n",
    );
    let leaf = dir.join("leaf.pem");
    run(openssl()
        .args(["x509", "-req", "-sha256", "-days", "7"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&ca.0)
        .arg("-CAkey")
        .arg(&ca.1)
        .args(["-set_serial", &format!("0x{serial}")])
        .args(["-copy_extensions", "copyall"])
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&leaf));
    std::fs::read_to_string(leaf).expect("leaf")
}

#[test]
fn csr_passes_openssl_verify_and_shows_the_sans_for_each_key_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (kt, algo, signature) in [
        (KeyType::EcP256, "id-ecPublicKey", "ecdsa-with-SHA256"),
        (KeyType::Rsa2048, "rsaEncryption", "sha256WithRSAEncryption"),
        (KeyType::Rsa3072, "rsaEncryption", "sha256WithRSAEncryption"),
    ] {
        let k = keys::generate(kt, &subject()).expect("generate");
        let csr = write(dir.path(), "req.csr", &k.csr_pem);
        let out = run(openssl()
            .args(["req", "-verify", "-noout", "-in"])
            .arg(&csr));
        assert!(text(&out).contains("verify OK"), "{kt:?}: {}", text(&out));

        let out = run(openssl().args(["req", "-text", "-noout", "-in"]).arg(&csr));
        let t = text(&out);
        for needle in [
            algo,
            signature,
            "Subject: C = DE, L = Berlin, O = Example Org, OU = Payments, CN = client-a",
            "X509v3 Subject Alternative Name",
            "DNS:client-a.example.com",
            "DNS:*.svc.example.com",
            "IP Address:192.0.2.10",
            "IP Address:2001:DB8:0:0:0:0:0:1",
            "email:ops@example.com",
            "URI:spiffe://example.org/ns/a/sa/client",
        ] {
            assert!(t.contains(needle), "{kt:?}: no {needle:?} in:\n{t}");
        }
        if kt == KeyType::Rsa3072 {
            assert!(t.contains("(3072 bit)"), "{t}");
        }
        if kt == KeyType::Rsa2048 {
            assert!(t.contains("(2048 bit)"), "{t}");
        }

        // The key the store keeps: PKCS#8 that openssl reads and that matches the CSR.
        let key = write(dir.path(), "key.pem", &k.key_pem);
        let from_key = run(openssl().args(["pkey", "-pubout", "-in"]).arg(&key));
        let from_csr = run(openssl()
            .args(["req", "-pubkey", "-noout", "-in"])
            .arg(&csr));
        assert_eq!(from_key.stdout, from_csr.stdout, "{kt:?}");
    }
}

#[test]
fn csr_signed_by_openssl_completes_into_a_p12_that_keytool_and_openssl_read() {
    let keytool = keytool();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = openssl_ca(dir.path());
    let ca_pem = std::fs::read_to_string(&ca.0).expect("ca");
    for (i, kt) in [KeyType::EcP256, KeyType::Rsa2048, KeyType::Rsa3072]
        .into_iter()
        .enumerate()
    {
        let k = keys::generate(kt, &subject()).expect("generate");
        let serial = format!("7e57{i:02x}c0ffee");
        let leaf = openssl_sign(dir.path(), &ca, &k.csr_pem, &serial);

        let done = keys::complete(&k.key_pem, &leaf, Some(&ca_pem)).expect("complete");
        assert_eq!(done.serial_hex.to_lowercase(), serial, "{kt:?}");
        assert_eq!(done.chain_len, 1, "{kt:?}");
        assert!(done.warnings.is_empty(), "{kt:?}: {:?}", done.warnings);
        assert_eq!(done.issuer, "O=Test,CN=CSR Test CA", "{kt:?}");
        assert!(done.subject.starts_with("CN=client-a,"), "{}", done.subject);
        let p12 = write(dir.path(), "client.p12", &done.p12);

        // Java.
        let out = run(Command::new(&keytool)
            .args(["-list", "-v", "-storetype", "PKCS12", "-keystore"])
            .arg(&p12)
            .args(["-storepass:env", PASS_VAR])
            .env(PASS_VAR, &done.password));
        let t = text(&out);
        for needle in [
            "PrivateKeyEntry",
            "Alias name: client",
            "Certificate chain length: 2",
            "Owner: CN=client-a, OU=Payments, O=Example Org, L=Berlin, C=DE",
            "Issuer: O=Test, CN=CSR Test CA",
            &format!("Serial number: {serial}"),
        ] {
            assert!(
                t.contains(needle),
                "{kt:?}: keytool output lacks {needle:?}:\n{t}"
            );
        }

        // openssl 3, default provider only (no -legacy).
        let out = run(openssl()
            .args(["pkcs12", "-info", "-nokeys", "-in"])
            .arg(&p12)
            .args(["-passin", &format!("env:{PASS_VAR}")])
            .env(PASS_VAR, &done.password));
        let t = text(&out);
        for needle in [
            "MAC: sha1",
            "PBES2, PBKDF2, AES-256-CBC",
            "subject=C = DE, L = Berlin, O = Example Org, OU = Payments, CN = client-a",
            "subject=CN = CSR Test CA, O = Test",
        ] {
            assert!(
                t.contains(needle),
                "{kt:?}: openssl output lacks {needle:?}:\n{t}"
            );
        }
        // And the key comes out with the password, matching the stored one.
        let out = run(openssl()
            .args(["pkcs12", "-nocerts", "-nodes", "-in"])
            .arg(&p12)
            .args(["-passin", &format!("env:{PASS_VAR}")])
            .env(PASS_VAR, &done.password));
        let extracted = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            keys::public_key_der(&extracted).expect("extracted key"),
            keys::public_key_der(&k.key_pem).expect("stored key"),
            "{kt:?}"
        );

        // The gateway's own decoder.
        let d = mtls_gateway::p12::decode(&done.p12, &done.password).expect("decode");
        assert_eq!(d.serial_hex, done.serial_hex);
        assert_eq!(d.leaf_sha256, done.leaf_sha256);
    }
}

#[test]
fn csr_for_an_openssl_key_in_pkcs1_or_sec1_after_normalising() {
    // The shapes Vault's pki/issue returns keys in.
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = openssl_ca(dir.path());
    let ca_pem = std::fs::read_to_string(&ca.0).expect("ca");
    let rsa = run(openssl().args(["genrsa", "-traditional", "2048"]));
    let ec = run(openssl().args(["ecparam", "-genkey", "-noout", "-name", "prime256v1"]));
    for (label, raw, header) in [
        ("PKCS#1", rsa.stdout, "-----BEGIN RSA PRIVATE KEY-----"),
        ("SEC1", ec.stdout, "-----BEGIN EC PRIVATE KEY-----"),
    ] {
        let raw = String::from_utf8(raw).expect("pem");
        assert!(raw.starts_with(header), "{label}: {raw:.40}");
        let key = keys::normalize_key_pem(&raw).expect("normalize");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{label}");
        // openssl agrees it is the same key.
        let a =
            run(openssl()
                .args(["pkey", "-pubout", "-in"])
                .arg(write(dir.path(), "raw.pem", &raw)));
        let b =
            run(openssl()
                .args(["pkey", "-pubout", "-in"])
                .arg(write(dir.path(), "p8.pem", &key)));
        assert_eq!(a.stdout, b.stdout, "{label}");

        let csr = keys::csr_for(&key, &subject()).expect("csr");
        let leaf = openssl_sign(dir.path(), &ca, &csr, "01");
        // The chain first and the leaf last, in one upload: the leaf is found by its key.
        let done = keys::complete(&raw, &format!("{ca_pem}{leaf}"), None).expect("complete");
        assert_eq!(done.chain_len, 1, "{label}");
        assert_eq!(done.serial_hex.trim_start_matches('0'), "1", "{label}");
    }
}

#[test]
fn csr_completion_errors_say_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = openssl_ca(dir.path());
    let ca_pem = std::fs::read_to_string(&ca.0).expect("ca");
    let mine = keys::generate(KeyType::EcP256, &subject()).expect("generate");
    let other = keys::generate(KeyType::EcP256, &subject()).expect("generate");
    let leaf = openssl_sign(dir.path(), &ca, &other.csr_pem, "02");
    let e = keys::complete(&mine.key_pem, &leaf, Some(&ca_pem)).expect_err("other key");
    assert!(matches!(e, KeyError::KeyMismatch), "{e}");
    assert!(
        e.to_string()
            .contains("the certificate was not issued for this CSR's key"),
        "{e}"
    );
    assert!(!e.to_string().contains("PRIVATE"), "{e}");

    // A chain certificate from elsewhere.
    let stranger = certgen::new_ca("Stranger CA").expect("ca");
    let stranger_pem = String::from_utf8(certgen::to_pem(&stranger.cert)).expect("pem");
    let leaf = openssl_sign(dir.path(), &ca, &mine.csr_pem, "03");
    let e = keys::complete(
        &mine.key_pem,
        &leaf,
        Some(&format!("{ca_pem}{stranger_pem}")),
    )
    .expect_err("stray");
    assert!(e.to_string().contains("CN=Stranger CA"), "{e}");
    assert!(
        e.to_string()
            .contains("not part of the leaf's issuing chain"),
        "{e}"
    );
}
