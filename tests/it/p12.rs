//! PKCS#12 decoding and the tester report, on files made at test time: by BoringSSL's builder
//! (`certgen::to_p12`) and by the `openssl` CLI in each flavour (`certgen::openssl_p12`).
//! Requires the `openssl` 3 CLI.

use std::time::{SystemTime, UNIX_EPOCH};

use mtls_gateway::dev::certgen::{self, Digest, Issued, KeyKind, Leaf, P12Flavour};
use mtls_gateway::p12::{self, check, KeyPolicy, P12Error, Report};

const PASSWORD: &str = "correct horse";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn ca() -> Issued {
    certgen::new_ca("Test CA").expect("CA")
}

fn client(ca: &Issued, leaf: Leaf) -> Issued {
    certgen::issue(ca, &leaf).expect("leaf")
}

fn der(cert: &boring::x509::X509) -> Vec<u8> {
    cert.to_der().expect("der")
}

fn report_for(ca: &Issued, leaf: Leaf) -> Report {
    let c = client(ca, leaf);
    let file =
        certgen::to_p12(&c.cert, &c.key, std::slice::from_ref(&ca.cert), PASSWORD).expect("p12");
    p12::test_report(&file, PASSWORD, now(), &KeyPolicy::default())
}

fn assert_only_failure(r: &Report, name: &str) {
    let failed: Vec<_> = r.checks.iter().filter(|c| !c.passed).collect();
    assert!(!r.usable, "{r:#?}");
    assert_eq!(failed.len(), 1, "expected only {name} to fail: {r:#?}");
    assert_eq!(failed[0].name, name, "{r:#?}");
}

fn assert_all_pass(r: &Report) {
    assert!(r.usable, "{r:#?}");
    assert_eq!(r.checks.len(), check::ALL.len());
    assert!(r.checks.iter().all(|c| c.passed), "{r:#?}");
}

#[test]
fn modern_openssl_p12_decodes_to_the_leaf_with_its_chain() {
    let root = ca();
    let inter = certgen::new_intermediate(&root, "Test Intermediate").expect("intermediate");
    let c = client(&inter, Leaf::client("client-a"));
    // Chain stored root first: decode must still return it leaf -> root.
    let file = certgen::openssl_p12(
        &c.cert,
        &c.key,
        &[root.cert.clone(), inter.cert.clone()],
        PASSWORD,
        P12Flavour::Modern,
    )
    .expect("openssl");

    let d = p12::decode(&file, PASSWORD).expect("decode");

    assert_eq!(der(&d.leaf), der(&c.cert));
    assert!(d.key.public_eq(&c.key));
    let chain: Vec<_> = d.chain.iter().map(der).collect();
    assert_eq!(chain, vec![der(&inter.cert), der(&root.cert)]);
    assert_eq!(d.subject, "CN=client-a");
    assert_eq!(d.leaf_sha256.to_vec(), {
        use sha2::Digest as _;
        sha2::Sha256::digest(der(&c.cert)).to_vec()
    });
    assert!(d.not_before < now() && now() < d.not_after);
}

#[test]
fn legacy_openssl_p12_decodes_to_the_leaf() {
    let ca = ca();
    let c = client(&ca, Leaf::client("client-legacy"));
    let file = certgen::openssl_p12(
        &c.cert,
        &c.key,
        std::slice::from_ref(&ca.cert),
        PASSWORD,
        P12Flavour::Legacy,
    )
    .expect("openssl -legacy");

    let d = p12::decode(&file, PASSWORD).expect("decode");

    assert_eq!(der(&d.leaf), der(&c.cert));
    assert!(d.key.public_eq(&c.key));
    assert_eq!(d.chain.len(), 1);
}

#[test]
fn unencrypted_and_boringssl_built_p12_decode_to_the_leaf() {
    let ca = ca();
    let c = client(&ca, Leaf::client("client-plain"));
    let plain =
        certgen::openssl_p12(&c.cert, &c.key, &[], PASSWORD, P12Flavour::Unencrypted).expect("p12");
    let built = certgen::to_p12(&c.cert, &c.key, &[], PASSWORD).expect("p12");

    for file in [plain, built] {
        let d = p12::decode(&file, PASSWORD).expect("decode");
        assert_eq!(der(&d.leaf), der(&c.cert));
    }
}

#[test]
fn leaf_is_the_certificate_matching_the_key_wherever_it_sits_in_the_file() {
    let ca = ca();
    let c = client(&ca, Leaf::client("client-last"));
    let other = client(&ca, Leaf::client("someone-else"));
    // Key-only export plus extra certificates: the matching certificate comes last.
    let file = certgen::openssl_p12_parts(
        None,
        Some(&c.key),
        &[other.cert.clone(), ca.cert.clone(), c.cert.clone()],
        PASSWORD,
        P12Flavour::Modern,
    )
    .expect("openssl");

    let d = p12::decode(&file, PASSWORD).expect("decode");

    assert_eq!(d.subject, "CN=client-last");
    assert_eq!(d.chain.len(), 2);
    // The issuer comes first, the unrelated certificate after it.
    assert_eq!(der(&d.chain[0]), der(&ca.cert));
}

#[test]
fn cert_key_puts_the_leaf_first_then_the_chain() {
    let ca = ca();
    let c = client(&ca, Leaf::client("client-ck"));
    let file =
        certgen::to_p12(&c.cert, &c.key, std::slice::from_ref(&ca.cert), PASSWORD).expect("p12");
    let d = p12::decode(&file, PASSWORD).expect("decode");

    let ck = p12::cert_key(&d);

    assert_eq!(der(ck.leaf()), der(&c.cert));
    let inter: Vec<_> = ck.intermediates().iter().map(der).collect();
    assert_eq!(inter, vec![der(&ca.cert)]);
}

#[test]
fn wrong_password_is_reported_as_wrong_password_for_every_flavour() {
    let ca = ca();
    let c = client(&ca, Leaf::client("client-pw"));
    let files = [
        certgen::openssl_p12(&c.cert, &c.key, &[], PASSWORD, P12Flavour::Modern).expect("modern"),
        certgen::openssl_p12(&c.cert, &c.key, &[], PASSWORD, P12Flavour::Legacy).expect("legacy"),
        certgen::to_p12(&c.cert, &c.key, &[], PASSWORD).expect("boring"),
    ];
    for file in files {
        let err = p12::decode(&file, "not the password").expect_err("must fail");
        assert!(matches!(err, P12Error::WrongPassword), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the password does not open this PKCS#12 file"
        );
        assert!(!err.to_string().contains("not the password"));
    }
}

#[test]
fn empty_password_opens_a_file_made_with_an_empty_password() {
    let ca = ca();
    let c = client(&ca, Leaf::client("client-empty-pw"));
    let file = certgen::openssl_p12(&c.cert, &c.key, &[], "", P12Flavour::Modern).expect("p12");

    assert!(p12::decode(&file, "").is_ok());
    assert!(matches!(
        p12::decode(&file, "x"),
        Err(P12Error::WrongPassword)
    ));
}

#[test]
fn random_bytes_are_not_pkcs12() {
    let mut noise = vec![0u8; 2048];
    boring::rand::rand_bytes(&mut noise).expect("rand");
    noise[0] = 0x17; // not a SEQUENCE tag, so it cannot pass for a truncated file either

    let err = p12::decode(&noise, PASSWORD).expect_err("must fail");

    assert!(matches!(err, P12Error::NotPkcs12), "{err:?}");
}

#[test]
fn a_certificate_or_pem_text_is_not_pkcs12() {
    let ca = ca();
    for input in [der(&ca.cert), certgen::to_pem(&ca.cert), Vec::new()] {
        let err = p12::decode(&input, PASSWORD).expect_err("must fail");
        assert!(matches!(err, P12Error::NotPkcs12), "{err:?}");
    }
}

#[test]
fn truncated_file_is_reported_as_truncated_with_both_lengths() {
    let ca = ca();
    let c = client(&ca, Leaf::client("client-trunc"));
    let file =
        certgen::openssl_p12(&c.cert, &c.key, &[], PASSWORD, P12Flavour::Modern).expect("p12");
    let cut = &file[..file.len() / 2];

    let err = p12::decode(cut, PASSWORD).expect_err("must fail");

    match err {
        P12Error::Truncated { declared, actual } => {
            assert_eq!(declared, file.len());
            assert_eq!(actual, cut.len());
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn certificate_only_file_has_no_private_key() {
    let ca = ca();
    let c = client(&ca, Leaf::client("client-nokey"));
    let file = certgen::openssl_p12_parts(Some(&c.cert), None, &[], PASSWORD, P12Flavour::Modern)
        .expect("openssl -nokeys");

    let err = p12::decode(&file, PASSWORD).expect_err("must fail");

    assert!(matches!(err, P12Error::NoPrivateKey), "{err:?}");
}

#[test]
fn key_only_file_has_no_certificate() {
    let c = client(&ca(), Leaf::client("client-nocert"));
    let file = certgen::openssl_p12_parts(None, Some(&c.key), &[], PASSWORD, P12Flavour::Modern)
        .expect("openssl -nocerts");

    let err = p12::decode(&file, PASSWORD).expect_err("must fail");

    assert!(matches!(err, P12Error::NoCertificate), "{err:?}");
}

#[test]
fn key_stored_with_another_certificate_is_a_key_mismatch() {
    let ca = ca();
    let mine = client(&ca, Leaf::client("client-mine"));
    let theirs = client(&ca, Leaf::client("client-theirs"));
    let file = certgen::openssl_p12_parts(
        None,
        Some(&mine.key),
        std::slice::from_ref(&theirs.cert),
        PASSWORD,
        P12Flavour::Modern,
    )
    .expect("openssl");

    let err = p12::decode(&file, PASSWORD).expect_err("must fail");

    assert!(matches!(err, P12Error::KeyMismatch), "{err:?}");
}

#[test]
fn expired_certificate_fails_decode_valid_at_but_decodes() {
    let ca = ca();
    let leaf = Leaf {
        not_before_offset_days: -30,
        valid_days: 10,
        ..Leaf::client("client-expired")
    };
    let c = client(&ca, leaf);
    let file = certgen::to_p12(&c.cert, &c.key, &[], PASSWORD).expect("p12");

    let d = p12::decode(&file, PASSWORD).expect("structurally fine");
    let err = p12::decode_valid_at(&file, PASSWORD, now()).expect_err("expired");

    match err {
        P12Error::Expired { not_after } => assert_eq!(not_after, d.not_after),
        other => panic!("expected Expired, got {other:?}"),
    }
    assert!(err_text(&file, now()).starts_with("the certificate expired at 20"));
}

fn err_text(file: &[u8], now: i64) -> String {
    p12::decode_valid_at(file, PASSWORD, now)
        .expect_err("must fail")
        .to_string()
}

#[test]
fn not_yet_valid_certificate_fails_decode_valid_at() {
    let ca = ca();
    let leaf = Leaf {
        not_before_offset_days: 2,
        ..Leaf::client("client-future")
    };
    let c = client(&ca, leaf);
    let file = certgen::to_p12(&c.cert, &c.key, &[], PASSWORD).expect("p12");

    let err = p12::decode_valid_at(&file, PASSWORD, now()).expect_err("not yet valid");

    assert!(matches!(err, P12Error::NotYetValid { .. }), "{err:?}");
}

#[test]
fn two_certificates_can_share_a_serial_but_not_a_leaf_digest() {
    let (ca_a, ca_b) = (ca(), certgen::new_ca("Other CA").expect("CA"));
    let a = client(
        &ca_a,
        Leaf {
            serial: Some(4242),
            ..Leaf::client("client-a")
        },
    );
    let b = client(
        &ca_b,
        Leaf {
            serial: Some(4242),
            ..Leaf::client("client-b")
        },
    );
    let da = p12::decode(
        &certgen::to_p12(&a.cert, &a.key, &[], PASSWORD).expect("p12"),
        PASSWORD,
    )
    .expect("a");
    let db = p12::decode(
        &certgen::to_p12(&b.cert, &b.key, &[], PASSWORD).expect("p12"),
        PASSWORD,
    )
    .expect("b");

    assert_eq!(da.serial_hex, "1092");
    assert_eq!(da.serial_hex, db.serial_hex);
    assert_ne!(da.leaf_sha256, db.leaf_sha256);
}

#[test]
fn tester_passes_a_modern_ec_p256_client_certificate() {
    let r = report_for(&ca(), Leaf::client("client-ec"));

    assert_all_pass(&r);
    assert_eq!(r.key_algorithm.as_deref(), Some("EC P-256"));
    assert_eq!(r.key_bits, Some(256));
    assert_eq!(r.signature_algorithm.as_deref(), Some("ecdsa-with-SHA256"));
    assert_eq!(r.subject.as_deref(), Some("CN=client-ec"));
    assert_eq!(r.chain_length, Some(1));
}

#[test]
fn tester_passes_rsa_4096() {
    let r = report_for(
        &ca(),
        Leaf {
            key: KeyKind::Rsa4096,
            ..Leaf::client("client-rsa4096")
        },
    );

    assert_all_pass(&r);
    assert_eq!(r.key_algorithm.as_deref(), Some("RSA"));
    assert_eq!(r.key_bits, Some(4096));
}

#[test]
fn tester_fails_rsa_1024_on_key_strength_only() {
    let r = report_for(
        &ca(),
        Leaf {
            key: KeyKind::Rsa1024,
            ..Leaf::client("client-rsa1024")
        },
    );

    assert_only_failure(&r, check::KEY_STRENGTH);
    assert_eq!(r.key_bits, Some(1024));
}

#[test]
fn tester_fails_ed25519_on_key_strength_with_a_reason() {
    let r = report_for(
        &ca(),
        Leaf {
            key: KeyKind::Ed25519,
            ..Leaf::client("client-ed25519")
        },
    );

    assert_only_failure(&r, check::KEY_STRENGTH);
    let c = r
        .checks
        .iter()
        .find(|c| c.name == check::KEY_STRENGTH)
        .expect("check");
    assert!(c.detail.contains("Java"), "{}", c.detail);
}

#[test]
fn tester_fails_a_sha1_signed_certificate_on_signature_only() {
    let r = report_for(
        &ca(),
        Leaf {
            digest: Digest::Sha1,
            ..Leaf::client("client-sha1")
        },
    );

    assert_only_failure(&r, check::SIGNATURE);
    assert_eq!(r.signature_algorithm.as_deref(), Some("ecdsa-with-SHA1"));
}

#[test]
fn tester_fails_an_md5_signed_certificate_on_signature_only() {
    // BoringSSL will not sign with MD5, so the openssl CLI makes this one: a self-signed RSA
    // certificate (no chain, no EKU), which leaves the signature as the only problem.
    let key = KeyKind::Rsa2048.generate().expect("key");
    let dir = tempfile::tempdir().expect("tempdir");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&key_path, certgen::key_to_pem(&key)).expect("write key");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-new",
            "-md5",
            "-days",
            "30",
            "-subj",
            "/CN=client-md5",
        ])
        .arg("-key")
        .arg(&key_path)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = boring::x509::X509::from_pem(&out.stdout).expect("pem");
    let file = certgen::to_p12(&cert, &key, &[], PASSWORD).expect("p12");

    let r = p12::test_report(&file, PASSWORD, now(), &KeyPolicy::default());

    assert_only_failure(&r, check::SIGNATURE);
    assert_eq!(
        r.signature_algorithm.as_deref(),
        Some("md5WithRSAEncryption")
    );
}

#[test]
fn tester_fails_server_auth_only_eku_on_client_auth() {
    let r = report_for(&ca(), Leaf::server("api.example", &["api.example"], &[]));

    assert_only_failure(&r, check::CLIENT_AUTH);
}

#[test]
fn tester_passes_a_certificate_without_eku() {
    let r = report_for(
        &ca(),
        Leaf {
            client_auth: false,
            server_auth: false,
            ..Leaf::client("client-no-eku")
        },
    );

    assert_all_pass(&r);
}

#[test]
fn tester_fails_an_expired_certificate_on_validity_only() {
    let r = report_for(
        &ca(),
        Leaf {
            not_before_offset_days: -30,
            valid_days: 10,
            ..Leaf::client("client-expired")
        },
    );

    assert_only_failure(&r, check::VALIDITY);
}

#[test]
fn tester_fails_a_chain_stored_root_first_on_chain_order() {
    let root = ca();
    let inter = certgen::new_intermediate(&root, "Test Intermediate").expect("intermediate");
    let c = client(&inter, Leaf::client("client-chain"));
    let misordered = certgen::to_p12(
        &c.cert,
        &c.key,
        &[root.cert.clone(), inter.cert.clone()],
        PASSWORD,
    )
    .expect("p12");
    let ordered = certgen::to_p12(
        &c.cert,
        &c.key,
        &[inter.cert.clone(), root.cert.clone()],
        PASSWORD,
    )
    .expect("p12");

    let bad = p12::test_report(&misordered, PASSWORD, now(), &KeyPolicy::default());
    let good = p12::test_report(&ordered, PASSWORD, now(), &KeyPolicy::default());

    assert_only_failure(&bad, check::CHAIN_ORDER);
    assert_all_pass(&good);
}

#[test]
fn tester_says_legacy_and_modern_files_are_readable_by_java() {
    let ca = ca();
    let c = client(&ca, Leaf::client("client-java"));
    for flavour in [P12Flavour::Modern, P12Flavour::Legacy] {
        let file =
            certgen::openssl_p12(&c.cert, &c.key, &[], PASSWORD, flavour.clone()).expect("openssl");
        let r = p12::test_report(&file, PASSWORD, now(), &KeyPolicy::default());
        assert_all_pass(&r);
        let protection = r.protection.as_deref().expect("protection");
        match flavour {
            P12Flavour::Modern => assert_eq!(
                protection,
                "certificates: PBES2 (PBKDF2 with hmacWithSHA256, AES-256-CBC); \
                 key: PBES2 (PBKDF2 with hmacWithSHA256, AES-256-CBC); MAC: SHA-256"
            ),
            _ => assert_eq!(
                protection,
                "certificates: pbeWithSHAAnd40BitRC2-CBC; \
                 key: pbeWithSHAAnd3-KeyTripleDES-CBC; MAC: SHA-1"
            ),
        }
    }
}

#[test]
fn tester_says_aes192_and_unencrypted_keys_are_not_readable_by_java() {
    let ca = ca();
    let c = client(&ca, Leaf::client("client-java"));
    let aes192 = P12Flavour::Custom {
        key_pbe: "AES-192-CBC".into(),
        cert_pbe: "AES-192-CBC".into(),
    };
    for flavour in [aes192, P12Flavour::Unencrypted] {
        let file = certgen::openssl_p12(&c.cert, &c.key, &[], PASSWORD, flavour).expect("openssl");
        let r = p12::test_report(&file, PASSWORD, now(), &KeyPolicy::default());
        assert_only_failure(&r, check::JAVA_READABLE);
    }
}

#[test]
fn tester_marks_later_checks_not_run_when_the_password_is_wrong() {
    let ca = ca();
    let c = client(&ca, Leaf::client("client-pw"));
    let file = certgen::to_p12(&c.cert, &c.key, &[], PASSWORD).expect("p12");

    let r = p12::test_report(&file, "wrong", now(), &KeyPolicy::default());

    assert!(!r.usable);
    assert_eq!(r.checks[0].name, check::OPENS);
    assert_eq!(
        r.checks[0].detail,
        "the password does not open this PKCS#12 file"
    );
    assert_eq!(r.checks.len(), check::ALL.len());
    assert!(r.checks[1..]
        .iter()
        .all(|c| !c.passed && c.detail.starts_with("not run: ")));
    assert!(r.subject.is_none());
}

#[test]
fn tester_still_checks_the_certificate_of_a_certificate_only_file() {
    let ca = ca();
    let c = client(&ca, Leaf::client("client-nokey"));
    let file = certgen::openssl_p12_parts(
        Some(&c.cert),
        None,
        std::slice::from_ref(&ca.cert),
        PASSWORD,
        P12Flavour::Modern,
    )
    .expect("openssl");

    let r = p12::test_report(&file, PASSWORD, now(), &KeyPolicy::default());

    assert_only_failure(&r, check::PRIVATE_KEY);
    assert_eq!(r.subject.as_deref(), Some("CN=client-nokey"));
}

#[test]
fn tester_report_serializes_summary_fields_in_camel_case() {
    let r = report_for(&ca(), Leaf::client("client-json"));

    let json = serde_json::to_value(&r).expect("json");

    for key in [
        "usable",
        "checks",
        "subject",
        "serial",
        "notBefore",
        "notAfter",
        "keyAlgorithm",
        "keyBits",
        "signatureAlgorithm",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    assert!(json["notAfter"].as_str().expect("string").ends_with('Z'));
}

#[test]
fn rc2_128_file_is_unsupported_and_the_message_names_the_algorithm() {
    // openssl writes it, Java reads it, BoringSSL does not implement it.
    let c = client(&ca(), Leaf::client("client-rc2"));
    let flavour = P12Flavour::Custom {
        key_pbe: "PBE-SHA1-3DES".into(),
        cert_pbe: "PBE-SHA1-RC2-128".into(),
    };
    let file = certgen::openssl_p12(&c.cert, &c.key, &[], PASSWORD, flavour).expect("openssl");

    let err = p12::decode(&file, PASSWORD).expect_err("must fail");

    assert!(matches!(err, P12Error::Unsupported(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("pbeWithSHAAnd128BitRC2-CBC"), "{text}");
    assert!(!text.contains("3-KeyTripleDES"), "{text}");
}

/// The fixture: 10,000,000 PBKDF2 and MAC iterations (tests/fixtures/README.md).
const ITER_10M: &[u8] = include_bytes!("../fixtures/p12-iter-10000000.p12");

#[test]
fn iteration_counts_are_read_from_the_outer_layers_of_every_flavour() {
    let ca = ca();
    let c = client(&ca, Leaf::client("iterations"));
    let file = |f| certgen::openssl_p12(&c.cert, &c.key, &[], PASSWORD, f).expect("openssl");
    // openssl 3 writes 2048 everywhere by default.
    assert_eq!(
        p12::max_iterations(&file(P12Flavour::Modern)),
        Some(("PBKDF2", 2048))
    );
    assert_eq!(
        p12::max_iterations(&file(P12Flavour::Legacy)),
        Some(("PKCS#12 PBE", 2048))
    );
    assert_eq!(
        p12::max_iterations(&file(P12Flavour::Unencrypted)),
        Some(("MAC", 2048))
    );
    assert_eq!(p12::max_iterations(ITER_10M), Some(("PBKDF2", 10_000_000)));
    assert_eq!(p12::max_iterations(b"not a PKCS#12 file"), None);
}

#[test]
fn a_file_over_the_iteration_cap_is_refused_without_being_opened() {
    const REFUSAL: &str = "PBKDF2 iteration count 10000000 exceeds the cap p12.max_iterations = 1000000; re-export the file with fewer iterations";
    let started = std::time::Instant::now();
    let e = p12::Decoder::default()
        .check(ITER_10M)
        .expect_err("over the cap");
    assert!(matches!(
        e,
        P12Error::TooManyIterations {
            count: 10_000_000,
            cap: 1_000_000,
            ..
        }
    ));
    assert!(e.to_string().starts_with(REFUSAL), "{e}");
    // The tester: the opens check fails with the same words and nothing else runs.
    let r = p12::test_report(ITER_10M, "pw", now(), &KeyPolicy::default());
    assert!(!r.usable);
    assert_eq!(r.checks[0].name, check::OPENS);
    assert!(r.checks[0].detail.starts_with(REFUSAL), "{r:#?}");
    assert!(r.checks[1..].iter().all(|c| !c.passed), "{r:#?}");
    // Opening it would take 12 s or more.
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // A raised cap lets it through to the decode (not run here: too slow).
    assert!(p12::Decoder::new(10_000_000, 1).check(ITER_10M).is_ok());
}
