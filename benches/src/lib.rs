//! Shared by the benchmark binaries: starting a `strata serve` of this build to measure.

pub mod kurrent;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A server this run started, and its data directory (removed when dropped, after the server).
pub struct Spawned {
    child: Child,
    _dir: tempfile::TempDir,
    /// `host:port` of the metrics endpoint, when started with `--metrics-listen`.
    pub metrics: Option<String>,
}

impl Spawned {
    /// A memory figure of the server's `/proc/PID/status` (`VmHWM`, `VmRSS`), in MiB.
    fn status_mib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    }

    /// Peak resident memory of the server so far, in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        self.status_mib("VmHWM")
    }

    /// Resident memory of the server now, in MiB.
    pub fn rss_mib(&self) -> u64 {
        self.status_mib("VmRSS")
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A secure server (TLS with development certificates, users on): its `https://` URL, the
/// process, and the CA file clients trust. Clients log in as `admin` / `changeit` (accepted
/// on loopback).
pub fn spawn_secure_server(extra: &[&str]) -> (String, Spawned, std::path::PathBuf) {
    let bin = std::env::current_exe().unwrap().with_file_name("strata");
    let certs = std::env::temp_dir().join(format!("strata-bench-certs-{}", std::process::id()));
    let done = Command::new(&bin)
        .args(["certs", "dev", "--out"])
        .arg(&certs)
        .output()
        .expect("run strata certs dev");
    assert!(done.status.success(), "strata certs dev failed");
    let (cert, key) = (certs.join("node.pem"), certs.join("node.key"));
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (url, spawned) = spawn_server_with(&args);
    (
        url.replacen("http://", "https://", 1),
        spawned,
        certs.join("ca.pem"),
    )
}

/// A client builder for `url`; with `ca`, over TLS trusting it and logged in as `admin`
/// (the secure server of [`spawn_secure_server`]).
pub fn client_builder(url: &str, ca: Option<&std::path::Path>) -> strata_client::ClientBuilder {
    let b = strata_client::Client::builder(url.to_owned());
    match ca {
        None => b,
        Some(ca) => b
            .tls_ca_file(ca)
            .expect("read the CA file")
            .credentials("admin", "changeit"),
    }
}

pub fn spawn_server() -> (String, Spawned) {
    spawn_server_with(&[])
}

/// [`spawn_server`] with extra `strata serve` options.
pub fn spawn_server_with(extra: &[&str]) -> (String, Spawned) {
    let bin = std::env::current_exe().unwrap().with_file_name("strata");
    let dir = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (build it with cargo build --release -p strata-server)",
                bin.display()
            )
        });
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut metrics = None;
    let addr = loop {
        let line = lines.next().expect("server exited").unwrap();
        if let Some(at) = line.find("metrics on http://") {
            metrics = line[at + 18..].split('/').next().map(str::to_owned);
        }
        if let Some(at) = line.find("listening on ") {
            break line[at + 13..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (
        format!("http://{addr}"),
        Spawned {
            child,
            _dir: dir,
            metrics,
        },
    )
}
