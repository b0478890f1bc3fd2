//! Helpers shared by Strata's integration and crash tests: finding (or building) the `strata`
//! binary and running it as a real server on an ephemeral port.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

pub mod cluster;
pub mod history;
pub mod metrics;
pub mod netns;
pub mod secure;

/// A two-worker runtime for tests that drive the server from async code.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The payload the crash writers store for an event, derived from its ID so that a reader
/// can check the bytes are intact.
pub fn payload_for(stream: &str, id: Uuid) -> String {
    format!(
        "{{\"stream\":\"{stream}\",\"id\":\"{id}\",\"pad\":\"{}\"}}",
        "x".repeat((id.as_u128() % 150) as usize)
    )
}

/// The `strata` binary of this build profile, built on first use. A test crate cannot rely on
/// `CARGO_BIN_EXE_strata` (the binary belongs to another package), so this runs
/// `cargo build -p strata-server --bin strata` into the same target directory; when the binary
/// is up to date that is a quick no-op.
///
/// `STRATA_BIN` names another binary to test instead (e.g. an older build, to see a regression
/// test fail against the code it guards).
pub fn strata_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("STRATA_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile directory")
            .to_owned();
        let target_dir = profile_dir.parent().expect("target directory").to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--locked",
            "-p",
            "strata-server",
            "--bin",
            "strata",
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the strata binary");
        assert!(status.success(), "building the strata binary failed");
        let bin = profile_dir.join("strata");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}

/// Development certificates (`strata certs dev`) in `dir/certs`, with client certificates for
/// `users`; returns the directory.
pub fn dev_certs(dir: &Path, users: &[&str]) -> PathBuf {
    let out = dir.join("certs");
    let mut cmd = Command::new(strata_bin());
    cmd.args(["certs", "dev", "--out"]).arg(&out);
    for u in users {
        cmd.args(["--user", u]);
    }
    let done = cmd.output().expect("run strata certs dev");
    assert!(
        done.status.success(),
        "strata certs dev failed: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    out
}

/// The flags that make a server secure with the certificates of [`dev_certs`].
pub fn tls_flags(certs: &Path) -> Vec<String> {
    let f = |name: &str| certs.join(name).display().to_string();
    vec![
        "--tls-cert".into(),
        f("node.pem"),
        "--tls-key".into(),
        f("node.key"),
        "--tls-ca".into(),
        f("ca.pem"),
    ]
}

/// A runnable example of the client crate, built on first use like [`strata_bin`].
pub fn client_example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let profile_dir = strata_bin().parent().expect("profile directory").to_owned();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--locked", "-p", "strata-client", "--examples"])
            .env(
                "CARGO_TARGET_DIR",
                profile_dir.parent().expect("target directory"),
            )
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("cargo build --examples").success(),
            "building the client examples failed"
        );
    });
    profile_dir.join("examples").join(name)
}

/// A Python virtualenv next to the build (`target/<name>`) with `requirement` installed from
/// PyPI, created on first use; returns its interpreter. Tests run in parallel: only one of
/// them creates a virtualenv at a time.
pub fn python_venv(name: &str, requirement: &str, module: &str) -> PathBuf {
    static SETUP: Mutex<()> = Mutex::new(());
    let _one_at_a_time = SETUP.lock().unwrap_or_else(|e| e.into_inner());
    let target = strata_bin()
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_owned();
    let venv = target.join(name);
    let py = venv.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ready(&py) {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is needed for this test");
        assert!(made.success(), "python3 -m venv {} failed", venv.display());
        let pip = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                requirement,
            ])
            .status()
            .expect("run pip");
        assert!(
            pip.success(),
            "pip install {requirement} failed (PyPI must be reachable)"
        );
        assert!(ready(&py), "{requirement} installed but cannot be imported");
    }
    py
}

/// Settings of a consumer group that starts at the beginning of its source.
pub fn group_from_start() -> strata_client::GroupSettings {
    strata_client::GroupSettings {
        start_from: Some(strata_client::GroupStart::Start),
        ..Default::default()
    }
}

/// Every event of a stream, read through the Strata API (panics on errors).
pub async fn read_events(
    c: &strata_client::Client,
    stream: &str,
) -> Vec<strata_client::RecordedEvent> {
    use futures::TryStreamExt;
    c.read_stream(stream, strata_client::ReadOptions::default())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// A running `strata serve` process.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    extra: Vec<String>,
    /// The network namespace it runs in (see [`netns`]), if not the test's own.
    netns: Option<String>,
    logs: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts a server on `127.0.0.1:0` with `dir` as its data directory.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        Self::start_on(dir, "127.0.0.1:0", extra)
    }

    /// Starts a server listening on `listen`.
    pub fn start_on(dir: &Path, listen: &str, extra: &[&str]) -> Server {
        Self::try_start_on(dir, listen, extra, &[], None).unwrap_or_else(|log| {
            panic!("strata serve did not start; its log:\n{log}");
        })
    }

    /// Starts a server listening on `listen` inside the network namespace `netns` (made by
    /// [`netns::Lab`]); restarts stay in it.
    pub fn start_in_netns(dir: &Path, listen: &str, extra: &[&str], netns: &str) -> Server {
        Self::try_start_on(dir, listen, extra, &[], Some(netns)).unwrap_or_else(|log| {
            panic!("strata serve did not start in {netns}; its log:\n{log}");
        })
    }

    /// Starts a server whose files cannot grow past `max_file_bytes` (`RLIMIT_FSIZE`, with
    /// `SIGXFSZ` ignored): a write beyond it fails with EFBIG, as on a failing or full disk.
    pub fn start_with_file_limit(dir: &Path, extra: &[&str], max_file_bytes: u64) -> Server {
        Self::try_start_on(
            dir,
            "127.0.0.1:0",
            extra,
            &[(libc::RLIMIT_FSIZE, max_file_bytes)],
            None,
        )
        .unwrap_or_else(|log| {
            panic!("strata serve did not start; its log:\n{log}");
        })
    }

    /// Starts a server that may hold at most `max_fds` file descriptors (`RLIMIT_NOFILE`, soft
    /// and hard, so the server cannot raise it).
    pub fn start_with_fd_limit(dir: &Path, extra: &[&str], max_fds: u64) -> Server {
        Self::try_start_on(
            dir,
            "127.0.0.1:0",
            extra,
            &[(libc::RLIMIT_NOFILE, max_fds)],
            None,
        )
        .unwrap_or_else(|log| {
            panic!("strata serve did not start; its log:\n{log}");
        })
    }

    /// Starts a server listening on `listen`, or returns the log of the one that did not start.
    fn try_start_on(
        dir: &Path,
        listen: &str,
        extra: &[&str],
        rlimits: &[(libc::__rlimit_resource_t, u64)],
        netns: Option<&str>,
    ) -> Result<Server, String> {
        let mut cmd = Command::new(strata_bin());
        cmd.args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--listen", listen, "--log-format", "json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The namespace is opened here and entered in the child before exec.
        let ns_file = netns.map(|name| {
            std::fs::File::open(format!("/var/run/netns/{name}"))
                .unwrap_or_else(|e| panic!("network namespace {name}: {e}"))
        });
        if !rlimits.is_empty() || ns_file.is_some() {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let rlimits = rlimits.to_vec();
            let ns_fd = ns_file.as_ref().map(|f| f.as_raw_fd());
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if let Some(fd) = ns_fd {
                        if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    for (resource, limit) in &rlimits {
                        let lim = libc::rlimit {
                            rlim_cur: *limit as libc::rlim_t,
                            rlim_max: *limit as libc::rlim_t,
                        };
                        if libc::setrlimit(*resource, &lim) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn strata serve");
        drop(ns_file);
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("listening on ") {
                    let addr: String = line[at + 13..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    let _ = tx.send(addr);
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                let log = logs.lock().unwrap().clone();
                return Err(log);
            }
        };
        Ok(Server {
            child: Some(child),
            addr,
            dir: dir.to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            netns: netns.map(str::to_owned),
            logs,
            reader: Some(reader),
        })
    }

    /// Waits until the log reader has seen the end of the exited server's stderr.
    fn drain_log(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of a secure server.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A client of a secure server started with [`tls_flags`], logged in as `user` (or
    /// anonymous).
    pub async fn client_as(
        &self,
        certs: &Path,
        user: Option<(&str, &str)>,
    ) -> Result<strata_client::Client, strata_client::Error> {
        let mut b =
            strata_client::Client::builder(self.https_url()).tls_ca_file(certs.join("ca.pem"))?;
        if let Some((u, p)) = user {
            b = b.credentials(u, p);
        }
        b.connect().await
    }

    pub async fn client(&self) -> strata_client::Client {
        strata_client::Client::connect(self.url())
            .await
            .expect("connect to strata")
    }

    /// Runs `strata <args>` against a secure server started with [`tls_flags`] (anonymous).
    pub fn cli_secure(&self, certs: &Path, args: &[&str]) -> Output {
        Command::new(strata_bin())
            .args(args)
            .args(["--server", &self.https_url(), "--tls-ca"])
            .arg(certs.join("ca.pem"))
            .output()
            .expect("run the strata CLI")
    }

    /// Runs `strata <args> --server <url>` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(strata_bin())
            .args(args)
            .args(["--server", &self.url()])
            .output()
            .expect("run the strata CLI")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// CPU time (user + system) the server process has used, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// The most resident memory the server process has had so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM")
    }

    fn status_kib(&self, key: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Sends a signal (e.g. SIGSTOP / SIGCONT to freeze and thaw the server). SIGSTOP returns
    /// only once every thread of the server is stopped (delivery is asynchronous: a thread
    /// in the middle of a system call stops when it returns), so what the test does next
    /// meets a frozen server.
    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid() as i32, sig) };
        if sig == libc::SIGSTOP {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.all_threads_stopped() {
                assert!(
                    Instant::now() < deadline,
                    "the server did not stop within 10 s of SIGSTOP"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Whether every thread's state in `/proc` is "stopped".
    fn all_threads_stopped(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return false;
        };
        tasks.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|stat| {
                    // The state follows the parenthesised command name.
                    let after = stat.rsplit_once(')')?.1;
                    after
                        .split_whitespace()
                        .next()
                        .map(|s| s == "T" || s == "t")
                })
                .unwrap_or(false)
        })
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            self.drain_log();
        }
    }

    /// SIGTERM, and wait (at most 30 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.drain_log();
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "strata did not exit within 30 s of SIGTERM; log:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `strata serve` on `dir` expecting it to refuse to start; returns its exit code and
    /// stderr.
    pub fn refused(dir: &Path, extra: &[&str]) -> (Option<i32>, String) {
        let mut child = Command::new(strata_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run strata serve");
        let mut stderr = child.stderr.take().expect("stderr");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        // A server that starts instead of refusing is stopped, and reported as such.
        let deadline = Instant::now() + Duration::from_secs(30);
        let code = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut log = reader.join().unwrap_or_default();
        if code.is_none() {
            log.push_str("\n(still running after 30 s: it did not refuse; killed)");
        }
        (code, log)
    }

    /// Starts the server again on the same data directory, address and options.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        // Another process may briefly hold the old port (e.g. as a connection's source
        // port); wait for it rather than fail.
        let mut tries = 0;
        let next = loop {
            match Server::try_start_on(
                &self.dir,
                &self.addr.to_string(),
                &extra,
                &[],
                self.netns.as_deref(),
            ) {
                Ok(server) => break server,
                Err(log) if log.contains("in use") && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(log) => panic!("strata serve did not restart; its log:\n{log}"),
            }
        };
        *self = next;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
