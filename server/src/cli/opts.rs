//! How the CLI reaches a server: the options every client command shares (server URL, TLS,
//! credentials) and the connection they make.

use std::time::Duration;

use clap::Args;
use strata_client::{Client, Error};

#[derive(Debug, Args, Clone)]
pub struct ClientOpts {
    /// Server URL.
    #[arg(long, env = "STRATA_SERVER", default_value = "http://127.0.0.1:2113")]
    pub(super) server: String,
    /// One JSON object per line instead of human-readable output.
    #[arg(long)]
    pub(super) json: bool,
    /// Deadline for each call, in seconds.
    #[arg(long, default_value_t = 30)]
    pub(super) timeout: u64,
    /// User to log in as (with --password; over https:// only). The URL may carry them too:
    /// https://admin:changeit@host:2113.
    #[arg(long, env = "STRATA_USER")]
    pub(super) user: Option<String>,
    /// Password of --user.
    #[arg(
        long,
        env = "STRATA_PASSWORD",
        hide_env_values = true,
        requires = "user"
    )]
    pub(super) password: Option<String>,
    /// PEM file of the CA that signed the server's certificate (needed for https://).
    #[arg(long, env = "STRATA_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate, to log in by certificate (with --client-key).
    #[arg(long, env = "STRATA_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<std::path::PathBuf>,
    /// PEM key of --client-cert.
    #[arg(long, env = "STRATA_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<std::path::PathBuf>,
}

/// A client for `opts`: TLS when the URL is https://, with the CA, credentials and client
/// certificate given.
pub(super) async fn connect(opts: &ClientOpts) -> Result<Client, Error> {
    let mut b =
        Client::builder(opts.server.clone()).timeout(Some(Duration::from_secs(opts.timeout)));
    if let Some(user) = &opts.user {
        b = b.credentials(user.clone(), opts.password.clone().unwrap_or_default());
    }
    if let Some(ca) = &opts.tls_ca {
        b = b.tls_ca_file(ca)?;
    }
    if let (Some(cert), Some(key)) = (&opts.client_cert, &opts.client_key) {
        let read = |p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| Error::Connect(format!("cannot read {}: {e}", p.display())))
        };
        b = b.tls_identity_pem(read(cert)?, read(key)?);
    }
    b.connect().await
}
