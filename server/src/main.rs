//! `strata`: the Strata event store daemon (`strata serve`) and its command-line client.

mod auth;
mod budget;
mod cli;
mod cluster;
mod convert;
mod grpc_errors;
mod info;
mod kurrent;
mod metrics;
mod net;
mod persistent;
mod serve;
mod status;
mod store_health;
mod streams;
mod subscriptions;
mod trim;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: an event store database server and its CLI"
)]
struct Cli {
    /// Log level filter (error, warn, info, debug, trace, or a tracing directive list).
    #[arg(long, env = "STRATA_LOG", default_value = "info", global = true)]
    log_level: String,
    /// Log output format.
    #[arg(
        long,
        env = "STRATA_LOG_FORMAT",
        value_enum,
        default_value = "human",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<serve::ServeArgs>),
    /// Check every record of a stopped server's log (CRC, framing, complete appends).
    /// Exit 0 when the log is intact, 8 when it is corrupt (the error names file and offset).
    Verify {
        /// The data directory to check (the server must not be running on it).
        #[arg(long, env = "STRATA_DATA_DIR", default_value = "./strata-data")]
        data_dir: std::path::PathBuf,
    },
    /// Certificates for running secure.
    #[command(subcommand)]
    Certs(CertsCommand),
    #[command(flatten)]
    Client(Box<cli::ClientCommand>),
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Write a development CA and a node certificate (and client certificates with --user),
    /// to try the secure mode: `strata serve --tls-cert DIR/node.pem --tls-key DIR/node.key`.
    Dev(auth::certs::DevCertsArgs),
}

fn init_logging(level: &str, format: LogFormat) {
    // openraft narrates every vote and heartbeat at info: at a plain level name, it speaks
    // only at warn and above (a directive list such as `info,openraft=debug` overrides it).
    let quiet = ["trace", "debug", "info"].contains(&level);
    let directives = if quiet {
        format!("{level},openraft=warn")
    } else {
        level.to_owned()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("invalid --log-level {level:?}: {e}; using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `strata verify`: opens the store (recovering it as the server would) and reads every record.
fn verify(dir: &std::path::Path) -> i32 {
    if !dir.join("log").is_dir() {
        eprintln!(
            "strata: {} holds no Strata store (no log/ directory)",
            dir.display()
        );
        return 1;
    }
    let engine = match strata_engine::Engine::open(strata_engine::Config::new(dir)) {
        Ok(e) => e,
        Err(
            e @ (strata_engine::Error::Corruption { .. } | strata_engine::Error::DataLoss { .. }),
        ) => {
            eprintln!("strata: {e}");
            return 8;
        }
        Err(e) => {
            eprintln!("strata: cannot open {}: {e}", dir.display());
            return 1;
        }
    };
    let started = std::time::Instant::now();
    match engine.verify() {
        Ok(r) => {
            println!(
                "verified {} records ({} bytes) in {} segment(s) in {:.2} s: no corruption",
                r.records,
                r.bytes,
                r.segments,
                started.elapsed().as_secs_f64()
            );
            0
        }
        Err(e) => {
            eprintln!("strata: {e}");
            8
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the async runtime");
    let code = match cli.command {
        Command::Serve(args) => {
            init_logging(&cli.log_level, cli.log_format);
            match runtime.block_on(serve::serve(*args)) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("strata: {e}");
                    1
                }
            }
        }
        Command::Verify { data_dir } => {
            init_logging(
                if cli.log_level == "info" {
                    "warn"
                } else {
                    &cli.log_level
                },
                cli.log_format,
            );
            verify(&data_dir)
        }
        Command::Certs(CertsCommand::Dev(args)) => match auth::certs::dev(&args) {
            Ok(written) => {
                println!("{written}");
                0
            }
            Err(e) => {
                eprintln!("strata: {e}");
                1
            }
        },
        Command::Client(cmd) => {
            init_logging(
                if cli.log_level == "info" {
                    "warn"
                } else {
                    &cli.log_level
                },
                cli.log_format,
            );
            runtime.block_on(cli::run(*cmd))
        }
    };
    // Blocking work still running (a long read whose client left) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}
