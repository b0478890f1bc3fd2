//! Secure or insecure, and the rule that keeps a server from being exposed by accident.
//!
//! - With `--tls-cert` and `--tls-key` the server is **secure**: TLS on the gRPC port (and on
//!   the metrics port), and every call but health, gossip and server features must
//!   authenticate.
//! - With `--insecure` it is **insecure**: no TLS, no authentication, every call allowed
//!   (KurrentDB's `--insecure`). Beyond loopback this is logged as a warning at every start.
//! - With neither, a server whose listeners are all on loopback runs insecure (the one-command
//!   quick start); one that listens beyond loopback refuses to start and says what to pass.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::net::tls::TlsFiles;

/// Security options of `strata serve`.
#[derive(Debug, Args)]
pub struct SecurityArgs {
    /// Run without TLS and without authentication: every client may do everything. Needed to
    /// listen beyond loopback without TLS.
    #[arg(long, env = "STRATA_INSECURE")]
    pub insecure: bool,
    /// PEM certificate chain of this node (with --tls-key: TLS and authentication on).
    #[arg(long, env = "STRATA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "STRATA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) whose client certificates are accepted as logins (the user named
    /// by the certificate's common name). Optional.
    #[arg(long, env = "STRATA_TLS_CA", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Run secure with development certificates kept in this directory, written there by the
    /// first start that finds none (a CA and a node certificate for localhost and this host's
    /// name: see `strata certs dev`). Ignored with --tls-cert or --insecure. The Docker image
    /// sets it, so that a container is secure unless told otherwise.
    #[arg(long, env = "STRATA_DEV_CERTS")]
    pub dev_certs: Option<PathBuf>,
    /// Password of the `admin` user created at the first secure start (default: `changeit`,
    /// which is refused beyond loopback). Later it replaces a default password still in use.
    #[arg(long, env = "STRATA_INITIAL_ADMIN_PASSWORD", hide_env_values = true)]
    pub initial_admin_password: Option<String>,
    /// File holding the initial admin password (trailing newline ignored), for secrets
    /// mounted as files.
    #[arg(
        long,
        env = "STRATA_INITIAL_ADMIN_PASSWORD_FILE",
        conflicts_with = "initial_admin_password"
    )]
    pub initial_admin_password_file: Option<PathBuf>,
    /// Password of the `ops` user created at the first secure start (default: `changeit`).
    #[arg(long, env = "STRATA_INITIAL_OPS_PASSWORD", hide_env_values = true)]
    pub initial_ops_password: Option<String>,
}

/// How the server runs.
#[derive(Debug, Clone)]
pub enum Mode {
    Insecure,
    Secure {
        tls: TlsFiles,
        /// Whether accounts that still have the default password may log in (only when every
        /// listener is on loopback).
        default_passwords: bool,
    },
}

fn loopback(a: &SocketAddr) -> bool {
    a.ip().is_loopback()
}

/// Decides the mode from the options and the addresses the server listens on.
pub fn resolve(
    args: &SecurityArgs,
    listen: SocketAddr,
    metrics: Option<SocketAddr>,
) -> Result<Mode, String> {
    let all_loopback = loopback(&listen) && metrics.as_ref().is_none_or(loopback);
    match (&args.tls_cert, &args.tls_key, args.insecure) {
        (Some(_), Some(_), true) => Err("--insecure and --tls-cert/--tls-key contradict each other: choose one".into()),
        (Some(cert), Some(key), false) => Ok(Mode::Secure {
            tls: TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: args.tls_ca.clone(),
            },
            default_passwords: all_loopback,
        }),
        (None, None, false) if args.dev_certs.is_some() => {
            let dir = args.dev_certs.clone().expect("checked");
            let files = TlsFiles {
                cert: dir.join("node.pem"),
                key: dir.join("node.key"),
                ca: Some(dir.join("ca.pem")),
            };
            if !files.cert.exists() || !files.key.exists() {
                let hosts = hostname().into_iter().collect();
                let written = super::certs::dev(&super::certs::DevCertsArgs {
                    out: dir.clone(),
                    hosts,
                    users: Vec::new(),
                })?;
                tracing::info!("development certificates: {written}");
            }
            Ok(Mode::Secure {
                tls: files,
                default_passwords: all_loopback,
            })
        }
        (_, _, true) => {
            if !all_loopback {
                tracing::warn!(%listen, metrics = ?metrics,
                    "INSECURE MODE beyond loopback: no TLS and no authentication; anyone who reaches these ports can read, write and delete every stream. Use --tls-cert/--tls-key (see docs/security.md)");
            } else {
                tracing::info!("insecure mode: no TLS, no authentication (loopback only)");
            }
            Ok(Mode::Insecure)
        }
        _ if all_loopback => {
            tracing::info!("no --tls-cert given and every listener is on loopback: running insecure (no TLS, no authentication); see docs/security.md to run secure");
            Ok(Mode::Insecure)
        }
        _ => Err(format!(
            "refusing to listen on {} without TLS or authentication: give --tls-cert and --tls-key (`strata certs dev` writes a pair for trying it out), or --insecure to run open on purpose (see docs/security.md)",
            if loopback(&listen) { metrics.map(|m| m.to_string()).unwrap_or_default() } else { listen.to_string() }
        )),
    }
}

/// This machine's host name, for development certificates.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty() && name != "localhost").then_some(name)
}

/// The initial admin password, from the flag, the environment or the file.
pub fn initial_admin_password(args: &SecurityArgs) -> Result<Option<String>, String> {
    if let Some(p) = &args.initial_admin_password {
        return Ok(Some(p.clone()));
    }
    match &args.initial_admin_password_file {
        None => Ok(None),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read --initial-admin-password-file {}: {e}",
                    path.display()
                )
            })?;
            let p = text.trim_end_matches(['\n', '\r']).to_owned();
            if p.is_empty() {
                return Err(format!(
                    "--initial-admin-password-file {} is empty",
                    path.display()
                ));
            }
            Ok(Some(p))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(insecure: bool, tls: bool) -> SecurityArgs {
        SecurityArgs {
            insecure,
            tls_cert: tls.then(|| "c.pem".into()),
            tls_key: tls.then(|| "k.pem".into()),
            tls_ca: None,
            dev_certs: None,
            initial_admin_password: None,
            initial_admin_password_file: None,
            initial_ops_password: None,
        }
    }

    #[test]
    fn exposure_needs_tls_or_an_explicit_insecure() {
        let lo: SocketAddr = "127.0.0.1:2113".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:2113".parse().unwrap();
        assert!(matches!(
            resolve(&args(false, false), lo, None),
            Ok(Mode::Insecure)
        ));
        assert!(resolve(&args(false, false), any, None).is_err());
        assert!(resolve(&args(false, false), lo, Some(any)).is_err());
        assert!(matches!(
            resolve(&args(true, false), any, None),
            Ok(Mode::Insecure)
        ));
        assert!(matches!(
            resolve(&args(false, true), lo, None),
            Ok(Mode::Secure {
                default_passwords: true,
                ..
            })
        ));
        assert!(matches!(
            resolve(&args(false, true), any, None),
            Ok(Mode::Secure {
                default_passwords: false,
                ..
            })
        ));
        assert!(resolve(&args(true, true), lo, None).is_err());
    }
}
