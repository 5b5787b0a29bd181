//! `mtls-gateway run | check | demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mtls_gateway::config::Config;

/// mimalloc instead of glibc malloc: Pingora allocates per request (headers, buffers, futures);
/// glibc's malloc/free were ~11% of the proxy's CPU in a profile under load (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Plain HTTP in, mutual TLS out: client certificates from Vault or a file store.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// The YAML config file (see conf/example.yaml for every key).
        #[arg(long, short, env = "MTLS_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 when valid, 64 with a one-line error otherwise.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start a local mTLS echo target, seed a certificate and a mapping in a fresh file store,
    /// run the gateway, send a request through it and show which client certificate the target
    /// saw.
    Demo {
        /// Where to put the demo's store, config and certificates, kept after it stops (default:
        /// a temporary directory, removed when the demo stops).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Proxy port (0 = any free port).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Exit after the demonstration request instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
    },
}

const EX_USAGE: u8 = 64;

/// mimalloc commits whole arenas up front on Linux (where memory is overcommitted): with the
/// 10,000-certificate snapshot that put the resident set at 400+ MiB instead of ~170 MiB
/// (docs/performance.md). Its options are read from the environment when the process starts,
/// before `main`, so the process re-executes itself once with commit-on-demand set. Setting the
/// variable yourself (any value) skips this.
fn allocator_options() {
    const VAR: &str = "MIMALLOC_ARENA_EAGER_COMMIT";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(VAR, "0")
        .exec();
    // Only returns on failure: carry on with the allocator's defaults.
    eprintln!("note: could not re-execute with {VAR}=0 ({err}); memory use may be higher");
}

fn main() -> ExitCode {
    allocator_options();
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // vaultrs (the Vault store's client) and rustify (its HTTP layer) log every request at INFO
    // and every non-2xx answer, a 404 for an absent entry included, at ERROR; the store reports
    // what matters itself, with the setting to fix. Silent unless RUST_LOG names them.
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    for module in ["vaultrs", "rustify"] {
        if !asked.contains(module) {
            logger.filter_module(module, log::LevelFilter::Off);
        }
    }
    // reqsign (the Vault store's AWS login) logs at DEBUG what it got from STS for a web identity
    // (temporary secret key and session token included): off always, whatever RUST_LOG says.
    logger.filter_module("reqsign", log::LevelFilter::Off);
    logger.init();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::from(EX_USAGE)
            }
        },
        Command::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::from(EX_USAGE);
                }
            };
            match mtls_gateway::build(cfg) {
                Ok(g) => {
                    g.run();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mtls-gateway: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { dir, port, once } => match mtls_gateway::dev::demo::run(dir, port, once) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
