//! ctxleak: finds goroutine and context leaks in running Go programs, live, with eBPF.

mod attach;
mod census;
mod goexe;
mod metrics;
mod probes;
mod procmem;
mod readable;
mod target;
mod tracker;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Where metrics are served unless --web.listen-address says otherwise: loopback only, so
/// nothing is exposed by accident.
const DEFAULT_LISTEN: &str = "127.0.0.1:9789";

#[derive(Debug, Parser)]
#[command(name = "ctxleak", version, about = "Find goroutine and context leaks in running Go programs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attach to one running Go process and serve its goroutine metrics until it exits or
    /// ctxleak is interrupted (Ctrl-C detaches and leaves the process running).
    Attach {
        /// The process to watch.
        #[arg(long)]
        pid: u32,
        /// Address for the Prometheus metrics endpoint (/metrics).
        #[arg(long = "web.listen-address", default_value = DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Do not print the one-line summary every second.
        #[arg(long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CTXLEAK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ctxleak: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Attach { pid, listen, quiet } => {
                attach::run(attach::AttachOptions { pid, listen, summary: !quiet }).await.map(|_| ())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ctxleak: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
