//! ctxleak: finds goroutine and context leaks in running Go programs, live, with eBPF.
//! This is the command line; the work is done in the `ctxleak_daemon` library.

use std::io::Write as _;
use std::path::PathBuf;

use ctxleak_daemon::config::{self, DaemonConfig, ListenAddress, LogFormat};
use ctxleak_daemon::groups::SuspectRules;
use ctxleak_daemon::{attach, inspect};

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Where metrics are served unless --web.listen-address says otherwise: loopback only, so
/// nothing is exposed by accident.
const DEFAULT_LISTEN: &str = "127.0.0.1:9789";

/// Defaults shared by `attach`/`report` (clap defaults) and `daemon` (after its config file).
const DEFAULT_CENSUS_INTERVAL: &str = "5s";
const DEFAULT_SUSPECT_WINDOW_SHORT: &str = "1m";
const DEFAULT_SUSPECT_WINDOW_LONG: &str = "10m";
const DEFAULT_SUSPECT_MIN_AGE: &str = "30s";
const DEFAULT_STUCK_AFTER: &str = "3m";
const DEFAULT_CONTEXT_GRACE: &str = "5s";
const DEFAULT_RESCAN_INTERVAL: &str = "10s";

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
        /// Address for the Prometheus metrics endpoint (/metrics): host:port, or :port for
        /// every interface.
        #[arg(long = "web.listen-address", default_value = DEFAULT_LISTEN)]
        listen: ListenAddress,
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
    /// Address for the metrics endpoint: host:port, or :port for every interface
    /// [default: 127.0.0.1:9789].
    #[arg(long = "web.listen-address")]
    listen: Option<ListenAddress>,
    /// Watch only processes whose executable path matches this glob (`*` stays within a
    /// directory, `**` crosses them). Repeat for several; with no filter, every Go process.
    #[arg(long, value_name = "GLOB")]
    exe: Vec<String>,
    /// Watch only processes whose name (/proc/PID/comm, 15 characters) matches this glob.
    #[arg(long, value_name = "GLOB")]
    process_name: Vec<String>,
    /// Watch only processes whose cgroup path matches this glob (e.g. '/kubepods*/**' for
    /// Kubernetes pods, '/system.slice/myapp.service' for one systemd service).
    #[arg(long, value_name = "GLOB")]
    cgroup: Vec<String>,
    /// How often /proc is scanned for processes the exec tracepoint could have missed
    /// (at least 1s) [default: 10s].
    #[arg(long, value_parser = |text: &str| parse_period(text, config::RESCAN_INTERVAL))]
    rescan_interval: Option<Duration>,
    /// Log format on stderr: text, or json (one object per line) [default: text]. The level
    /// comes from CTXLEAK_LOG (default info).
    #[arg(long = "log.format", value_enum)]
    log_format: Option<LogFormat>,
    /// Probe event ring buffer size in bytes (power of two ≥ 4096), shared by all processes
    /// [default: 4194304].
    #[arg(long, value_parser = parse_ring_bytes)]
    ring_buffer_size: Option<u32>,
    /// How often every watched process's goroutines are read from memory (at least 100ms)
    /// [default: 5s].
    #[arg(long, value_parser = |text: &str| parse_period(text, config::CENSUS_INTERVAL))]
    census_interval: Option<Duration>,
    /// Leak-suspect rule: growth over this window [default: 1m]...
    #[arg(long, value_parser = humantime::parse_duration)]
    suspect_window_short: Option<Duration>,
    /// ...and over this one [default: 10m]...
    #[arg(long, value_parser = humantime::parse_duration)]
    suspect_window_long: Option<Duration>,
    /// ...and blocked at the same place at least this long [default: 30s]...
    #[arg(long, value_parser = humantime::parse_duration)]
    suspect_min_age: Option<Duration>,
    /// ...and its low point rose by at least this many goroutines over a window
    /// [default: 5]...
    #[arg(long, value_name = "GOROUTINES")]
    suspect_min_growth: Option<u64>,
    /// ...and by at least this percentage of its size [default: 10]. See attach --help.
    #[arg(long, value_name = "PERCENT", value_parser = parse_growth_percent)]
    suspect_min_growth_percent: Option<f64>,
    /// Goroutines blocked on a lock, a WaitGroup, a Cond or a channel send that have not run
    /// for this long are stuck [default: 3m]. See attach --help.
    #[arg(long, value_parser = humantime::parse_duration)]
    stuck_after: Option<Duration>,
    /// Probe runtime.gopark for exact blocked-since times (one more trap per park).
    #[arg(long)]
    park_times: bool,
    /// A goroutine outlives its context once the context was cancelled this long, and an
    /// uncancelled child context counts as unreleased once it is this old [default: 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    context_grace: Option<Duration>,
    /// Do not probe the context package.
    #[arg(long)]
    no_contexts: bool,
    /// Export each probe's runs and run time (costs two clock reads per probe hit; needs
    /// CAP_SYS_ADMIN).
    #[arg(long)]
    probe_stats: bool,
    /// What the probes may cost each watched process, as a share of one CPU: 1%, 0.5%, 0
    /// (memory only: no probes) or exact (probes always on) [default: 1%; with --park-times:
    /// exact]. See attach --help.
    #[arg(long, value_name = "SHARE")]
    max_overhead: Option<ctxleak_daemon::budget::ProbePolicy>,
}

impl DaemonArgs {
    /// The flags over the config file over the defaults.
    fn options(
        self,
        config: DaemonConfig,
    ) -> anyhow::Result<ctxleak_daemon::daemon::DaemonOptions> {
        let or = |flag: Option<Duration>, file: Option<Duration>, default: &str| {
            flag.or(file)
                .unwrap_or_else(|| humantime::parse_duration(default).unwrap_or_default())
        };
        let listen = match self.listen.or(config.listen_address) {
            Some(listen) => listen,
            None => DEFAULT_LISTEN.parse()?,
        };
        let list = |flag: Vec<String>, file: Vec<String>| if flag.is_empty() { file } else { flag };
        let filters = ctxleak_daemon::discover::Filters::new(
            &list(self.exe, config.exe),
            &list(self.process_name, config.process_name),
            &list(self.cgroup, config.cgroup),
        )?;
        let suspect_rules = SuspectRules {
            window_short: or(
                self.suspect_window_short,
                config.suspect_window_short,
                DEFAULT_SUSPECT_WINDOW_SHORT,
            ),
            window_long: or(
                self.suspect_window_long,
                config.suspect_window_long,
                DEFAULT_SUSPECT_WINDOW_LONG,
            ),
            min_age: or(
                self.suspect_min_age,
                config.suspect_min_age,
                DEFAULT_SUSPECT_MIN_AGE,
            ),
            min_growth: self
                .suspect_min_growth
                .or(config.suspect_min_growth)
                .unwrap_or(SuspectRules::default().min_growth),
            min_growth_percent: self
                .suspect_min_growth_percent
                .or(config.suspect_min_growth_percent)
                .unwrap_or(SuspectRules::default().min_growth_percent),
            stuck_after: or(self.stuck_after, config.stuck_after, DEFAULT_STUCK_AFTER),
        };
        Ok(ctxleak_daemon::daemon::DaemonOptions {
            listen,
            ring_bytes: self
                .ring_buffer_size
                .or(config.ring_buffer_size)
                .unwrap_or(ctxleak_common::EVENTS_RING_BYTES),
            watch: ctxleak_daemon::watcher::WatchOptions {
                probe_mode: ctxleak_daemon::probes::ProbeMode {
                    park_times: self.park_times || config.park_times.unwrap_or(false),
                    floor: false,
                    floor_spin_ns: 0,
                    no_contexts: self.no_contexts || config.no_contexts.unwrap_or(false),
                    run_stats: self.probe_stats || config.probe_stats.unwrap_or(false),
                },
                judgement: ctxleak_daemon::session::Judgement {
                    suspect_rules,
                    context_grace: or(
                        self.context_grace,
                        config.context_grace,
                        DEFAULT_CONTEXT_GRACE,
                    ),
                },
                census_interval: or(
                    self.census_interval,
                    config.census_interval,
                    DEFAULT_CENSUS_INTERVAL,
                ),
                per_process: false,
                policy: ctxleak_daemon::budget::ProbePolicy::resolve(
                    self.max_overhead.or(config.max_overhead),
                    self.park_times || config.park_times.unwrap_or(false),
                ),
            },
            filters,
            rescan_interval: or(
                self.rescan_interval,
                config.rescan_interval,
                DEFAULT_RESCAN_INTERVAL,
            ),
        })
    }
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
    /// How often to read every goroutine's state, stack and creation site from memory, at
    /// least 100ms (costs the target nothing; costs ctxleak CPU in proportion to the
    /// goroutines).
    #[arg(long, default_value = DEFAULT_CENSUS_INTERVAL, value_parser = |text: &str| parse_period(text, config::CENSUS_INTERVAL))]
    census_interval: Duration,
    /// Leak-suspect rule: a group of goroutines is a suspect when its members are blocked
    /// (waiting, not runnable or running) at a line of the program (not the main goroutine,
    /// not a stack that could not be read), when it is still growing over this window or the
    /// long one (its smallest count rose in every quarter of the window, as far back as
    /// ctxleak has watched: a pool that filled up and stayed flat, or connections coming and
    /// going with load, are not)...
    #[arg(long, default_value = DEFAULT_SUSPECT_WINDOW_SHORT, value_parser = humantime::parse_duration)]
    suspect_window_short: Duration,
    /// ...the long window, growth over which also ranks the suspects...
    #[arg(long, default_value = DEFAULT_SUSPECT_WINDOW_LONG, value_parser = humantime::parse_duration)]
    suspect_window_long: Duration,
    /// ...when its oldest goroutine has been blocked at the same place at least this long...
    #[arg(long, default_value = DEFAULT_SUSPECT_MIN_AGE, value_parser = humantime::parse_duration)]
    suspect_min_age: Duration,
    /// ...when its smallest count rose over the window by at least this many goroutines...
    #[arg(long, value_name = "GOROUTINES", default_value_t = SuspectRules::default().min_growth)]
    suspect_min_growth: u64,
    /// ...and by at least this percentage of the smallest count in the window's first
    /// quarter, to become a suspect (a group of 1000 idle connections that gains 10 is
    /// noise); a suspect stays one while it keeps growing by --suspect-min-growth.
    #[arg(long, value_name = "PERCENT", default_value_t = SuspectRules::default().min_growth_percent, value_parser = parse_growth_percent)]
    suspect_min_growth_percent: f64,
    /// Stuck verdict, apart from the suspects (a deadlock does not grow): goroutines blocked
    /// at a line of the program on a sync.Mutex or RWMutex, a WaitGroup, a Cond, a channel
    /// send, a nil channel or an empty select, that have not run once for this long (idle
    /// receives, selects, IO waits and sleeps never are).
    #[arg(long, default_value = DEFAULT_STUCK_AFTER, value_parser = humantime::parse_duration)]
    stuck_after: Duration,
    /// Probe runtime.gopark too, to know exactly since when each goroutine is blocked
    /// (one more trap per park, which costs the target CPU on busy services; without it,
    /// ages are measured from the census that first saw the goroutine blocked).
    #[arg(long)]
    park_times: bool,
    /// A goroutine started under a context is reported as outliving it once the context
    /// has been cancelled this long and the goroutine is still alive; an uncancelled child
    /// context is reported as unreleased once it is this old (in-flight requests are not).
    #[arg(long, default_value = DEFAULT_CONTEXT_GRACE, value_parser = humantime::parse_duration)]
    context_grace: Duration,
    /// Do not probe the context package (three probes: context creation, registration
    /// under a parent, cancellation); goroutine metrics only.
    #[arg(long)]
    no_contexts: bool,
    /// Count each probe's runs and run time in the kernel and export them
    /// (ctxleak_probe_runs_total, ctxleak_probe_run_seconds_total): what ctxleak costs the
    /// target, probe by probe. Costs two clock reads per probe hit; needs CAP_SYS_ADMIN.
    #[arg(long)]
    probe_stats: bool,
    /// What the probes may cost the target, as a share of one CPU: 1%, 0.5%, ... Each probe
    /// hit costs the target about a microsecond; under a budget, ctxleak estimates the cost
    /// from the hits it sees and switches the probes off and on in windows so that it
    /// averages at most the budget (ctxleak_probe_duty_ratio says how much of the time they
    /// were on). Goroutine counts and stacks come from memory either way and stay exact;
    /// created/exited counts and context findings are samples while the probes are off part
    /// of the time. 0: memory only (no probes, no context findings); exact: probes always
    /// on, whatever they cost [default: 1%; with --park-times: exact].
    #[arg(long, value_name = "SHARE")]
    max_overhead: Option<ctxleak_daemon::budget::ProbePolicy>,
    /// Benchmarks only: attach do-nothing programs at the same places (the trap cost alone).
    #[arg(long, hide = true)]
    floor: bool,
    /// Benchmarks only: like --floor, with programs that spin this many nanoseconds (what
    /// time inside a program costs the target).
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
        attach::AttachOptions {
            pid: self.pid,
            listen,
            summary,
            ring_bytes: self.ring_buffer_size,
            census_interval: self.census_interval,
            probe_mode: ctxleak_daemon::probes::ProbeMode {
                park_times: self.park_times,
                floor: self.floor || self.floor_spin_ns > 0,
                floor_spin_ns: self.floor_spin_ns,
                no_contexts: self.no_contexts,
                run_stats: self.probe_stats,
            },
            suspect_rules: SuspectRules {
                window_short: self.suspect_window_short,
                window_long: self.suspect_window_long,
                min_age: self.suspect_min_age,
                min_growth: self.suspect_min_growth,
                min_growth_percent: self.suspect_min_growth_percent,
                stuck_after: self.stuck_after,
            },
            context_grace: self.context_grace,
            policy: ctxleak_daemon::budget::ProbePolicy::resolve(
                self.max_overhead,
                self.park_times,
            ),
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

/// A duration for a timer, no shorter than `rule` allows (the same rule as the config key's).
fn parse_period(text: &str, rule: config::Period) -> Result<Duration, String> {
    let period = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    rule.check(period, text)
}

fn parse_growth_percent(text: &str) -> Result<f64, String> {
    let percent: f64 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{text:?} is not a number (a percentage such as 10)"))?;
    ctxleak_daemon::groups::check_growth_percent(percent)
}

fn parse_ring_bytes(text: &str) -> Result<u32, String> {
    let bytes: u32 = text.parse().map_err(|e| format!("{e}"))?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(format!("{bytes} is not a power of two of at least 4096"));
    }
    Ok(bytes)
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon's config file is read first: it may choose the log format.
    let mut daemon_config = None;
    match &cli.command {
        Command::Daemon(args) => {
            let config = match &args.config {
                Some(path) => match DaemonConfig::load(path) {
                    Ok(config) => config,
                    Err(error) => {
                        eprintln!("ctxleak: error: {error}");
                        return ExitCode::FAILURE;
                    }
                },
                None => DaemonConfig::default(),
            };
            // A daemon says what it attaches to and detaches from.
            init_logs(
                args.log_format
                    .or(config.log_format)
                    .unwrap_or(LogFormat::Text),
                "info",
            );
            daemon_config = Some(config);
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
            Command::Daemon(args) => {
                let options = args.options(daemon_config.unwrap_or_default())?;
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
