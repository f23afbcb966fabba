//! ctxleak: finds goroutine and context leaks in running Go programs, live, with eBPF.
//! This is the command line; the work is done in the `ctxleak_daemon` library.

use std::io::Write as _;
use std::path::PathBuf;

use ctxleak_daemon::{attach, inspect};

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Where metrics are served unless --web.listen-address says otherwise: loopback only, so
/// nothing is exposed by accident.
const DEFAULT_LISTEN: &str = "127.0.0.1:9789";

#[derive(Debug, Parser)]
#[command(
    name = "ctxleak",
    version,
    about = "Find goroutine and context leaks in running Go programs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attach to one running Go process and serve its goroutine metrics until it exits or
    /// ctxleak is interrupted (Ctrl-C detaches and leaves the process running).
    Attach {
        #[command(flatten)]
        watch: WatchArgs,
        /// Address for the Prometheus metrics endpoint (/metrics).
        #[arg(long = "web.listen-address", default_value = DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Do not print the one-line summary every second, nor the context leak report.
        #[arg(long)]
        quiet: bool,
    },
    /// Watch one running Go process for a while, print its leak report and exit: status 0
    /// when no leak was found, 1 when one was (leak-suspect goroutine groups, unreleased
    /// contexts, goroutines outliving their context), 2 on error. Only what happens while it
    /// watches is seen for contexts: made for a CI job that drives load, or a quick check.
    Report {
        #[command(flatten)]
        watch: WatchArgs,
        /// How long to watch before reporting.
        #[arg(long = "for", default_value = "30s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Print the report as JSON ({"leaks_found", "leaks", "groups"}) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show what ctxleak reads from a Go binary (version, struct layouts, probe addresses)
    /// without attaching to anything.
    Inspect {
        /// The executable to read.
        #[arg(required_unless_present = "pid", conflicts_with = "pid")]
        path: Option<PathBuf>,
        /// Read the executable of this running process instead.
        #[arg(long)]
        pid: Option<u32>,
        /// Also show where these program counters are in the source, as `function (file:line)`
        /// with inlined calls (link-time addresses, hex; works on stripped binaries).
        #[arg(long = "pc", value_parser = parse_hex)]
        pcs: Vec<u64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Live terminal view of a running `ctxleak attach`: goroutine groups and leak suspects,
    /// refreshed every interval. Keys: ↑/↓ or j/k select, Enter details (stack and creation
    /// site), s cycles the sort (rank, count, growth, age), q/Esc/Ctrl-C quit.
    Top {
        /// Where `ctxleak attach` serves its metrics and API (its --web.listen-address).
        #[arg(long, default_value = "http://127.0.0.1:9789")]
        url: String,
        /// How often to refresh: 1s, 500ms, 2m (at least 100ms).
        #[arg(long, default_value = "1s", value_parser = ctxleak_daemon::top::parse_interval)]
        interval: std::time::Duration,
    },
}

/// What to watch and how: shared by `attach` and `report`.
#[derive(Debug, Args)]
struct WatchArgs {
    /// The process to watch.
    #[arg(long)]
    pid: u32,
    /// Size of the probe event ring buffer in bytes: a power of two, at least 4096. Events
    /// that do not fit are counted (ctxleak_events_lost_total) and the goroutine set is
    /// re-read from the target's memory, so counts stay exact; a larger buffer means fewer
    /// re-reads under bursts of goroutine creation.
    #[arg(long, default_value_t = ctxleak_common::EVENTS_RING_BYTES, value_parser = parse_ring_bytes)]
    ring_buffer_size: u32,
    /// How often to read every goroutine's state, stack and creation site from memory
    /// (costs the target nothing; costs ctxleak CPU in proportion to the goroutines).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    census_interval: std::time::Duration,
    /// A leak suspect grew over this window...
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    suspect_window_short: std::time::Duration,
    /// ...and over this one (growth since attach while ctxleak has watched for less)...
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    suspect_window_long: std::time::Duration,
    /// ...and its oldest goroutine has been blocked at the same place at least this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    suspect_min_age: std::time::Duration,
    /// Probe runtime.gopark too, to know exactly since when each goroutine is blocked
    /// (one more trap per park, which costs the target CPU on busy services; without it,
    /// ages are measured from the census that first saw the goroutine blocked).
    #[arg(long)]
    park_times: bool,
    /// A goroutine started under a context is reported as outliving it once the context
    /// has been cancelled this long and the goroutine is still alive.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    context_grace: std::time::Duration,
    /// Do not probe the context package (three probes: context creation, registration
    /// under a parent, cancellation); goroutine metrics only.
    #[arg(long)]
    no_contexts: bool,
    /// Benchmarks only: attach do-nothing programs at the same places (the trap cost alone).
    #[arg(long, hide = true)]
    floor: bool,
}

impl WatchArgs {
    fn options(
        self,
        listen: SocketAddr,
        summary: bool,
        watch_for: Option<std::time::Duration>,
    ) -> attach::AttachOptions {
        attach::AttachOptions {
            pid: self.pid,
            listen,
            summary,
            ring_bytes: self.ring_buffer_size,
            census_interval: self.census_interval,
            probe_mode: ctxleak_daemon::probes::ProbeMode {
                park_times: self.park_times,
                floor: self.floor,
                no_contexts: self.no_contexts,
            },
            suspect_rules: ctxleak_daemon::groups::SuspectRules {
                window_short: self.suspect_window_short,
                window_long: self.suspect_window_long,
                min_age: self.suspect_min_age,
            },
            context_grace: self.context_grace,
            watch_for,
        }
    }
}

/// `ctxleak report`: the exit status says whether leaks were found.
async fn run_report(
    watch: WatchArgs,
    duration: std::time::Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let pid = watch.pid;
    // Its own free port: a report must not collide with an `attach` serving on the default.
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let outcome = attach::run(watch.options(listen, false, Some(duration))).await?;
    let (Some(leaks), Some(groups)) = (outcome.leaks, outcome.groups) else {
        anyhow::bail!("PID {pid} exited before ctxleak could read it: nothing to report");
    };
    let found = ctxleak_daemon::report::found(&leaks, &groups);
    let text = if json {
        serde_json::to_string_pretty(&serde_json::json!({
            "leaks_found": found,
            "leaks": leaks,
            "groups": groups,
        }))?
    } else {
        ctxleak_daemon::report::text(&leaks, &groups, duration.as_secs_f64())
    };
    match writeln!(std::io::stdout().lock(), "{}", text.trim_end()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => return Err(error.into()),
        _ => {}
    }
    Ok(if found {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_inspect(
    path: Option<PathBuf>,
    pid: Option<u32>,
    pcs: &[u64],
    json: bool,
) -> anyhow::Result<()> {
    let (path, display) = match (path, pid) {
        (Some(path), _) => (path.clone(), path),
        (None, Some(pid)) => {
            let link = PathBuf::from(format!("/proc/{pid}/exe"));
            let display = std::fs::read_link(&link).map_err(|error| {
                anyhow::anyhow!("cannot read the executable of PID {pid}: {error}")
            })?;
            (link, display)
        }
        (None, None) => anyhow::bail!("give a path or --pid"),
    };
    let inspection = inspect::inspect(&path, &display, pcs)?;
    let text = if json {
        serde_json::to_string_pretty(&inspection)?
    } else {
        inspection.to_string()
    };
    match writeln!(std::io::stdout().lock(), "{text}") {
        // A reader that stopped early (`| head`) is not an error.
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

fn parse_hex(text: &str) -> Result<u64, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u64::from_str_radix(digits, 16).map_err(|e| format!("{text:?} is not a hex address: {e}"))
}

fn parse_ring_bytes(text: &str) -> Result<u32, String> {
    let bytes: u32 = text.parse().map_err(|e| format!("{e}"))?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(format!("{bytes} is not a power of two of at least 4096"));
    }
    Ok(bytes)
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ctxleak: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let is_report = matches!(cli.command, Command::Report { .. });
    let result = runtime.block_on(async {
        match cli.command {
            Command::Attach {
                watch,
                listen,
                quiet,
            } => attach::run(watch.options(listen, !quiet, None))
                .await
                .map(|_| ExitCode::SUCCESS),
            Command::Report {
                watch,
                duration,
                json,
            } => run_report(watch, duration, json).await,
            Command::Inspect {
                path,
                pid,
                pcs,
                json,
            } => run_inspect(path, pid, &pcs, json).map(|()| ExitCode::SUCCESS),
            Command::Top { url, interval } => {
                ctxleak_daemon::top::run(ctxleak_daemon::top::TopOptions { url, interval })
                    .map(|()| ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ctxleak: error: {error:#}");
            // `report` keeps 1 for "leaks found"; its errors are 2.
            if is_report {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
