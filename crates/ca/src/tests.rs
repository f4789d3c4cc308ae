use super::*;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

#[test]
fn init_writes_a_private_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::init(dir.path()).unwrap();
    let mode = std::fs::metadata(dir.path().join(KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    let err = Ca::init(dir.path()).err().unwrap().to_string();
    assert!(err.contains("already exists"), "{err}");
    let loaded = Ca::load(dir.path()).unwrap().unwrap();
    assert_eq!(loaded.cert_der(), ca.cert_der());
}

#[test]
fn load_names_what_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Ca::load(dir.path()).unwrap().is_none());
    Ca::init(dir.path()).unwrap();
    std::fs::write(dir.path().join(CERT_FILE), "garbage").unwrap();
    let err = Ca::load(dir.path()).err().unwrap().to_string();
    assert!(
        err.contains("ca.pem") && err.contains("no PEM certificate"),
        "{err}"
    );

    // A certificate of another CA next to this key.
    let other = tempfile::tempdir().unwrap();
    Ca::init(other.path()).unwrap();
    std::fs::copy(other.path().join(CERT_FILE), dir.path().join(CERT_FILE)).unwrap();
    let err = Ca::load(dir.path()).err().unwrap().to_string();
    assert!(err.contains("does not belong to the key"), "{err}");

    std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
    let err = Ca::load(dir.path()).err().unwrap().to_string();
    assert!(err.contains("incomplete"), "{err}");
}

fn parse(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).unwrap().1
}

#[test]
fn leaves_are_signed_by_the_ca_for_names_and_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::init(dir.path()).unwrap();
    for name in ["api.example.com", "127.0.0.1", "::1"] {
        let (chain, _) = ca.server_leaf(name, Duration::from_secs(60)).unwrap();
        let leaf = parse(&chain[0]);
        let issuer = parse(ca.cert_der());
        leaf.verify_signature(Some(issuer.public_key())).unwrap();
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        let text = format!("{:?}", san.value.general_names);
        assert!(
            text.contains(name) || text.contains("IPAddress"),
            "{name}: {text}"
        );
    }
    assert!(
        ca.server_leaf("bücher.example", Duration::from_secs(60))
            .is_err()
    );
}

#[test]
fn client_certificates_carry_the_spiffe_id() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::init(dir.path()).unwrap();
    let (chain, _) = ca
        .client_cert("veto.local", "billing", Duration::from_secs(3600))
        .unwrap();
    let leaf = parse(&chain[0]);
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let text = format!("{:?}", san.value.general_names);
    assert!(
        text.contains("spiffe://veto.local/machine/billing"),
        "{text}"
    );
    let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(life, 3600 + 3600, "an hour of skew allowance plus the ttl");
}

#[test]
fn the_leaf_cache_is_bounded_and_reuses_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let leaves = Leaves::new(Ca::init(dir.path()).unwrap(), 2);
    let a = leaves.get("a.test").unwrap();
    assert!(Arc::ptr_eq(&a, &leaves.get("a.test").unwrap()));
    leaves.get("b.test").unwrap();
    leaves.get("c.test").unwrap();
    assert_eq!(leaves.len(), 2);
    assert!(
        !Arc::ptr_eq(&a, &leaves.get("a.test").unwrap()),
        "a was evicted"
    );
}
