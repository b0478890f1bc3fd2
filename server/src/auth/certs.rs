//! `strata certs dev`: a certificate authority and a node certificate for trying the secure
//! mode locally (and, with `--user`, client certificates that log in as that user). Not for
//! production: the CA key sits next to the certificates, unprotected.

use std::path::{Path, PathBuf};

use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Options of `strata certs dev`.
#[derive(Debug, Args)]
pub struct DevCertsArgs {
    /// Directory to write into (created if missing): ca.pem, ca.key, node.pem, node.key, and
    /// <user>.pem / <user>.key per --user.
    #[arg(long, default_value = "./strata-certs")]
    pub out: PathBuf,
    /// Host names and IP addresses the node certificate is valid for, besides localhost,
    /// 127.0.0.1 and ::1 (repeat the flag for several).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Also write a client certificate for this user (its common name), signed by the CA.
    #[arg(long = "user")]
    pub users: Vec<String>,
}

fn this_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    1970 + (secs / 31_556_952) as i32
}

fn write(dir: &Path, name: &str, contents: &str, private: bool) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
    }
    Ok(())
}

fn params(names: Vec<String>, cn: &str, year: i32) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(names).map_err(|e| format!("certificate names: {e}"))?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    p.not_after = rcgen::date_time_ymd(year + 2, 1, 1);
    Ok(p)
}

/// Writes the files; returns what was written, for the command's output.
pub fn dev(args: &DevCertsArgs) -> Result<String, String> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let year = this_year();
    let err = |e: rcgen::Error| format!("generating certificates: {e}");

    let mut ca = params(Vec::new(), "Strata development CA", year)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(err)?;
    write(&args.out, "ca.pem", &ca.pem(), false)?;
    write(&args.out, "ca.key", &ca_key_pem, true)?;

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(args.hosts.iter().cloned());
    let mut node = params(names.clone(), "strata-node", year)?;
    // A node certificate also serves as a client certificate: nodes will authenticate each
    // other with it (mutual TLS) when they replicate.
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let node_key = KeyPair::generate().map_err(err)?;
    let node_cert = node.signed_by(&node_key, &ca).map_err(err)?;
    write(&args.out, "node.pem", &node_cert.pem(), false)?;
    write(&args.out, "node.key", &node_key.serialize_pem(), true)?;

    let mut written = format!(
        "wrote {dir}/ca.pem (trust this in clients), {dir}/ca.key, {dir}/node.pem and {dir}/node.key (valid for {})",
        names.join(", "),
        dir = args.out.display()
    );
    for user in &args.users {
        strata_auth::users::validate_login(user).map_err(|e| e.to_string())?;
        let mut p = params(Vec::new(), user, year)?;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(err)?;
        let cert = p.signed_by(&key, &ca).map_err(err)?;
        write(&args.out, &format!("{user}.pem"), &cert.pem(), false)?;
        write(
            &args.out,
            &format!("{user}.key"),
            &key.serialize_pem(),
            true,
        )?;
        written.push_str(&format!(
            ", {dir}/{user}.pem and {dir}/{user}.key (a client certificate for user {user})",
            dir = args.out.display()
        ));
    }
    Ok(written)
}
