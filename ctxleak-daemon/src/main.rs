//! ctxleak: finds goroutine and context leaks in running Go programs, live, with eBPF.
//! This is the command line; the work is done in the `ctxleak_daemon` library.

use std::io::Write as _;
use std::path::PathBuf;

use ctxleak_daemon::config::{self, ListenAddress, LogFormat};
use ctxleak_daemon::options::{DaemonFlags, WatchFlags, WebFlags};
use ctxleak_daemon::{attach, inspect};

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

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
    /// ctxleak is interrupted (Ctrl-C detaches and leaves the process running). A Go program
    /// the process execs is followed; any other program ends the watch. Exit status: 0 when
    /// the watch ended (interrupted, the process exited or exec'd a program that is not Go),
    /// 1 on error.
    Attach {
        #[command(flatten)]
        watch: WatchArgs,
        #[command(flatten)]
        web: WebFlags,
        /// Do not print the one-line summary every second, nor the context leak report.
        #[arg(long)]
        quiet: bool,
    },
    /// Watch every Go process on this host (or those the filters select) and serve their
    /// metrics on one endpoint: the systemd service and the Kubernetes DaemonSet run this.
    /// Finds running processes at start and new ones as they exec, detaches from those that
    /// exit. Options come from --config, then from these flags, which override it.
    Daemon(DaemonArgs),
    /// Watch one running Go process for a while, print its leak report and exit: status 0
    /// when no leak was found, 1 when one was (leak-suspect goroutine groups, stuck
    /// goroutines, unreleased contexts, goroutines outliving their context), 2 on error. Only what happens while it
    /// watches is seen for contexts: made for a CI job that drives load, or a quick check.
    Report {
        #[command(flatten)]
        watch: WatchArgs,
        /// How long to watch before reporting.
        #[arg(long = "for", default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
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
    /// Live terminal view of a running `ctxleak attach` (or of one process of a `ctxleak
    /// daemon`, with --pid): goroutine groups and leak suspects,
    /// refreshed every interval. Keys: ↑/↓ or j/k select, Enter details (stack and creation
    /// site), s cycles the sort (rank, count, growth, age), q/Esc/Ctrl-C quit.
    Top {
        /// Where `ctxleak attach` serves its metrics and API (its --web.listen-address).
        #[arg(long, default_value = "http://127.0.0.1:9789")]
        url: String,
        /// How often to refresh: 1s, 500ms, 2m (at least 100ms).
        #[arg(long, default_value = "1s", value_parser = ctxleak_daemon::top::parse_interval)]
        interval: Duration,
        /// The process to show when --url is a `ctxleak daemon` watching several (its
        /// /api/targets lists them).
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Internal: holds the probes of a stopping ctxleak until it is gone, so that they are
    /// removed in the background (see the `release` module).
    #[command(name = ctxleak_daemon::release::HELPER_COMMAND, hide = true)]
    ReleaseProbes {
        /// The ctxleak whose probes these are.
        #[arg(long)]
        parent: u32,
    },
}

/// `ctxleak daemon`'s options. Each may come from the config file instead (the key is the
/// flag's name; a dotted flag is a table: `[web] listen-address`); a flag given here wins.
#[derive(Debug, Args)]
struct DaemonArgs {
    /// TOML file with defaults for these options (see deploy/systemd/ctxleak.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: DaemonFlags,
}

/// What to watch and how: shared by `attach` and `report`.
#[derive(Debug, Args)]
struct WatchArgs {
    /// The process to watch.
    #[arg(long)]
    pid: u32,
    #[command(flatten)]
    flags: WatchFlags,
    /// Benchmarks only: attach do-nothing programs at the same places (the trap cost alone).
    #[cfg(feature = "bench-floor")]
    #[arg(long, hide = true)]
    floor: bool,
    /// Benchmarks only: like --floor, with programs that spin this many nanoseconds (what
    /// time inside a program costs the target).
    #[cfg(feature = "bench-floor")]
    #[arg(long, hide = true, value_name = "NS", default_value_t = 0)]
    floor_spin_ns: u32,
}

impl WatchArgs {
    fn options(
        self,
        listen: ListenAddress,
        summary: bool,
        watch_for: Option<Duration>,
    ) -> attach::AttachOptions {
        #[cfg_attr(not(feature = "bench-floor"), allow(unused_mut))]
        let mut watch = self.flags.watch_options();
        #[cfg(feature = "bench-floor")]
        {
            watch.probe_mode.floor = self.floor || self.floor_spin_ns > 0;
            watch.probe_mode.floor_spin_ns = self.floor_spin_ns;
        }
        attach::AttachOptions {
            pid: self.pid,
            listen,
            summary,
            ring_bytes: self.flags.ring_bytes(),
            watch,
            watch_for,
        }
    }
}

/// `ctxleak report`: the exit status says whether leaks were found.
async fn run_report(watch: WatchArgs, duration: Duration, json: bool) -> anyhow::Result<ExitCode> {
    let pid = watch.pid;
    // Its own free port: a report must not collide with an `attach` serving on the default.
    let listen: ListenAddress = "127.0.0.1:0".parse()?;
    let outcome = attach::run(watch.options(listen, false, Some(duration))).await?;
    let (Some(leaks), Some(groups)) = (outcome.leaks, outcome.groups) else {
        anyhow::bail!(
            "PID {pid} exited, or exec'd a program that is not Go, before the end of the watch: nothing to report; watch a process that lives as long as --for"
        );
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

/// Logs on stderr at the level CTXLEAK_LOG says (default: `default_level`).
fn init_logs(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CTXLEAK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

/// `ctxleak daemon`'s options: its config file, then the flags given over it.
fn daemon_flags(args: &DaemonArgs, matches: &clap::ArgMatches) -> anyhow::Result<DaemonFlags> {
    let Some(path) = &args.config else {
        return Ok(args.flags.clone());
    };
    let file = config::load(path)?;
    match matches.subcommand_matches("daemon") {
        Some(given) => Ok(config::merge(file, given)?),
        None => anyhow::bail!("no `daemon` command in the arguments"),
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    // The daemon's config file is read first: it may choose the log format.
    let mut daemon_flags_read = None;
    match &cli.command {
        Command::Daemon(args) => {
            let flags = match daemon_flags(args, &matches) {
                Ok(flags) => flags,
                Err(error) => {
                    eprintln!(
                        "ctxleak: error: {}",
                        ctxleak_daemon::error_line::ErrorLine(error.as_ref())
                    );
                    return ExitCode::FAILURE;
                }
            };
            // A daemon says what it attaches to and detaches from.
            init_logs(flags.discovery.log.format_or_text(), "info");
            daemon_flags_read = Some(flags);
        }
        _ => init_logs(LogFormat::Text, "warn"),
    }
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
            Command::Attach { watch, web, quiet } => {
                attach::run(watch.options(web.listen(), !quiet, None))
                    .await
                    .map(|_| ExitCode::SUCCESS)
            }
            Command::Report {
                watch,
                duration,
                json,
            } => run_report(watch, duration, json).await,
            Command::Daemon(args) => {
                let options = daemon_flags_read.unwrap_or(args.flags).options()?;
                ctxleak_daemon::daemon::run(options)
                    .await
                    .map(|()| ExitCode::SUCCESS)
            }
            Command::Inspect {
                path,
                pid,
                pcs,
                json,
            } => run_inspect(path, pid, &pcs, json).map(|()| ExitCode::SUCCESS),
            Command::ReleaseProbes { parent } => {
                ctxleak_daemon::release::hold_until_gone(parent).await;
                Ok(ExitCode::SUCCESS)
            }
            Command::Top { url, interval, pid } => {
                ctxleak_daemon::top::run(ctxleak_daemon::top::TopOptions { url, interval, pid })
                    .map(|()| ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!(
                "ctxleak: error: {}",
                ctxleak_daemon::error_line::ErrorLine(error.as_ref())
            );
            // `report` keeps 1 for "leaks found"; its errors are 2.
            if is_report {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error clap gives for `args`, on its first line.
    fn refusal(args: &[&str]) -> String {
        let error = Cli::try_parse_from(args).expect_err("refused");
        error
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn periods_shorter_than_their_minimum_are_refused() {
        for command in [
            &["ctxleak", "attach", "--pid", "1"][..],
            &["ctxleak", "report", "--pid", "1"],
            &["ctxleak", "daemon"],
        ] {
            let line = refusal(&[command, &["--census-interval", "1ns"]].concat());
            assert!(
                line.ends_with(
                    "\"1ns\" is too short: give 100ms or more (a census more often costs CPU and \
                     shows nothing new)"
                ),
                "{command:?}: {line}"
            );
        }
        let line = refusal(&["ctxleak", "daemon", "--rescan-interval", "100ms"]);
        assert!(
            line.contains("\"100ms\" is too short: give 1s or more"),
            "{line}"
        );
        let line = refusal(&["ctxleak", "attach", "--pid", "1", "--census-interval", "0s"]);
        assert!(line.contains("give 100ms or more"), "{line}");
    }

    #[test]
    fn shortest_periods_are_accepted() {
        for args in [
            &[
                "ctxleak",
                "attach",
                "--pid",
                "1",
                "--census-interval",
                "100ms",
            ][..],
            &[
                "ctxleak",
                "daemon",
                "--census-interval",
                "100ms",
                "--rescan-interval",
                "1s",
            ],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|error| panic!("{args:?}: {error}"));
        }
    }
}
