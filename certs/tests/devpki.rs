//! Dev PKI generation: idempotency, re-issue, file modes, key formats.

use rtcgate_certs::{
    DevPkiStatus, LeafInfo, generate_dev_pki, load_certified_key, parse_cert_chain,
};
use std::time::{Duration, SystemTime};

fn leaf(path: &std::path::Path) -> LeafInfo {
    let pem = std::fs::read(path).unwrap();
    let chain = parse_cert_chain(&pem, path).unwrap();
    assert_eq!(chain.len(), 2, "cert.pem holds leaf + CA");
    LeafInfo::from_der(&chain[0]).unwrap()
}

#[test]
fn second_run_reuses_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let first = generate_dev_pki(dir.path(), &[]).unwrap();
    assert_eq!(first.status, DevPkiStatus::Generated);
    let before: Vec<Vec<u8>> = [&first.ca_cert, &first.ca_key, &first.cert, &first.key]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let second = generate_dev_pki(dir.path(), &[]).unwrap();
    assert_eq!(second.status, DevPkiStatus::Reused);
    let after: Vec<Vec<u8>> = [&second.ca_cert, &second.ca_key, &second.cert, &second.key]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn leaf_covers_defaults_and_respects_browser_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let pki = generate_dev_pki(dir.path(), &["gw.test".to_owned(), "10.9.8.7".to_owned()]).unwrap();
    let info = leaf(&pki.cert);
    for n in ["localhost", "127.0.0.1", "::1", "gw.test", "10.9.8.7"] {
        assert!(
            info.names.iter().any(|h| h == n),
            "{n} missing from {:?}",
            info.names
        );
    }
    let lifetime = info.not_after.duration_since(info.not_before).unwrap();
    assert!(lifetime <= Duration::from_secs(397 * 86400), "{lifetime:?}");
    assert!(info.valid_for(SystemTime::now(), Duration::from_secs(300 * 86400)));
    let ca_pem = std::fs::read(&pki.ca_cert).unwrap();
    let ca = LeafInfo::from_der(&parse_cert_chain(&ca_pem, &pki.ca_cert).unwrap()[0]).unwrap();
    assert_eq!(info.issuer, ca.subject);
    assert!(ca.not_after > info.not_after, "CA outlives the leaf");
    load_certified_key(&pki.cert, &pki.key).unwrap();
}

#[cfg(unix)]
#[test]
fn private_keys_are_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pki = generate_dev_pki(dir.path(), &[]).unwrap();
    for key in [&pki.key, &pki.ca_key] {
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
}

#[test]
fn broken_leaf_or_new_name_reissues_the_leaf_and_keeps_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = generate_dev_pki(dir.path(), &[]).unwrap();
    let ca_before = std::fs::read(&pki.ca_cert).unwrap();
    let leaf_before = std::fs::read(&pki.cert).unwrap();

    std::fs::write(&pki.key, b"garbage").unwrap();
    let again = generate_dev_pki(dir.path(), &[]).unwrap();
    assert_eq!(again.status, DevPkiStatus::LeafReissued);
    assert_eq!(std::fs::read(&pki.ca_cert).unwrap(), ca_before);
    assert_ne!(std::fs::read(&pki.cert).unwrap(), leaf_before);
    load_certified_key(&pki.cert, &pki.key).unwrap();

    let named = generate_dev_pki(dir.path(), &["sip.example.test".to_owned()]).unwrap();
    assert_eq!(named.status, DevPkiStatus::LeafReissued);
    assert!(
        leaf(&pki.cert)
            .names
            .iter()
            .any(|n| n == "sip.example.test")
    );
    assert_eq!(
        generate_dev_pki(dir.path(), &["sip.example.test".to_owned()])
            .unwrap()
            .status,
        DevPkiStatus::Reused
    );
}

#[test]
fn broken_ca_regenerates_everything() {
    let dir = tempfile::tempdir().unwrap();
    let pki = generate_dev_pki(dir.path(), &[]).unwrap();
    let ca_before = std::fs::read(&pki.ca_cert).unwrap();
    std::fs::remove_file(&pki.ca_key).unwrap();
    let again = generate_dev_pki(dir.path(), &[]).unwrap();
    assert_eq!(again.status, DevPkiStatus::Generated);
    assert_ne!(std::fs::read(&pki.ca_cert).unwrap(), ca_before);
}

#[test]
fn loads_pkcs1_rsa_pkcs8_rsa_and_sec1_ec_keys() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for (cert, key) in [
        ("rsa.crt", "rsa-pkcs1.key"),
        ("rsa.crt", "rsa-pkcs8.key"),
        ("ec.crt", "ec-sec1.key"),
    ] {
        let loaded = load_certified_key(&data.join(cert), &data.join(key))
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(loaded.cert.len(), 1, "{cert}");
    }
    let err = load_certified_key(&data.join("ec.crt"), &data.join("rsa-pkcs1.key")).unwrap_err();
    assert!(
        matches!(err, rtcgate_certs::CertError::KeyMismatch { .. }),
        "{err}"
    );
}
