//! The options of `ctxleak attach`, `report` and `daemon`, each defined once: a field of a
//! struct that is both command-line flags (`clap::Args`) and config-file keys
//! (`serde::Deserialize`, kebab-case, unknown fields denied), with one parser per option
//! that both use (clap's `value_parser`, serde's `deserialize_with` through the `de`
//! module) and one typed default, applied after the flags were merged over the file (see
//! [`crate::config`]).
//!
//! Every option is an `Option` (or an empty list) here, so that an option given on the command
//! line is told apart from one left out, as tokio-console does: `ctxleak daemon` reads its
//! config file into these structs, updates them with the flags given (clap's
//! `update_from_arg_matches`), and only then are the defaults applied. A switch is an
//! `Option<bool>` that the flag sets to true (`--park-times`); the file can set it too. The
//! `[default: …]` in each help text is checked against the typed default by a unit test.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use serde::Deserialize;

use crate::budget::ProbePolicy;
use crate::config::{ListenAddress, LogFormat};

/// Where metrics are served unless `--web.listen-address` says otherwise: loopback only, so
/// nothing is exposed by accident.
pub const DEFAULT_LISTEN: ListenAddress =
    ListenAddress::Socket(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9789)));
/// `--census-interval`'s default.
pub const DEFAULT_CENSUS_INTERVAL: Duration = Duration::from_secs(5);
/// `--context-grace`'s default.
pub const DEFAULT_CONTEXT_GRACE: Duration = Duration::from_secs(5);
/// `--rescan-interval`'s default.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(10);

/// What to watch and how: the options of `attach`, `report` and `daemon` (and keys of the
/// daemon's config file).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WatchFlags {
    /// Size of the probe event ring buffer in bytes: a power of two, at least 4096. Events
    /// that do not fit are counted (ctxleak_events_lost_total) and the goroutine set is
    /// re-read from the target's memory, so counts stay exact; a larger buffer means fewer
    /// re-reads under bursts of goroutine creation
    /// [default: 4194304].
    #[arg(long, value_parser = ring_buffer_size)]
    #[serde(default, deserialize_with = "de::ring_buffer_size")]
    pub ring_buffer_size: Option<u32>,
    /// How often to read every goroutine's state, stack and creation site from memory, at
    /// least 100ms (costs the target nothing; costs ctxleak CPU in proportion to the
    /// goroutines) [default: 5s].
    #[arg(long, value_parser = census_interval)]
    #[serde(default, deserialize_with = "de::census_interval")]
    pub census_interval: Option<Duration>,
    /// Leak-suspect rule: a group of goroutines is a suspect when its members are blocked
    /// (waiting, not runnable or running) at a line of the program (not the main goroutine,
    /// not a stack that could not be read), when it is still growing over this window or the
    /// long one (its smallest count rose in every quarter of the window, as far back as
    /// ctxleak has watched: a pool that filled up and stayed flat, or connections coming and
    /// going with load, are not)... [default: 1m]
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub suspect_window_short: Option<Duration>,
    /// ...the long window, growth over which also ranks the suspects... [default: 10m]
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub suspect_window_long: Option<Duration>,
    /// ...when its oldest goroutine has been blocked at the same place at least this long...
    /// [default: 30s]
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub suspect_min_age: Option<Duration>,
    /// ...when its smallest count rose over the window by at least this many goroutines...
    /// [default: 5]
    #[arg(long, value_name = "GOROUTINES", value_parser = goroutines)]
    #[serde(default, deserialize_with = "de::goroutines")]
    pub suspect_min_growth: Option<u64>,
    /// ...and by at least this percentage of the smallest count in the window's first
    /// quarter, to become a suspect (a group of 1000 idle connections that gains 10 is
    /// noise); a suspect stays one while it keeps growing by --suspect-min-growth
    /// [default: 10].
    #[arg(long, value_name = "PERCENT", value_parser = growth_percent)]
    #[serde(default, deserialize_with = "de::growth_percent")]
    pub suspect_min_growth_percent: Option<f64>,
    /// Stuck verdict, apart from the suspects (a deadlock does not grow): goroutines blocked
    /// at a line of the program on a sync.Mutex or RWMutex, a WaitGroup, a Cond, a channel
    /// send, a nil channel or an empty select, that have not run once for this long (idle
    /// receives, selects, IO waits and sleeps never are) [default: 3m].
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub stuck_after: Option<Duration>,
    /// Probe runtime.gopark too, to know exactly since when each goroutine is blocked
    /// (one more trap per park, which costs the target CPU on busy services; without it,
    /// ages are measured from the census that first saw the goroutine blocked).
    #[arg(long, num_args = 0, default_missing_value = "true")]
    #[serde(default)]
    pub park_times: Option<bool>,
    /// A goroutine started under a context is reported as outliving it once the context
    /// has been cancelled this long and the goroutine is still alive; an uncancelled child
    /// context is reported as unreleased once it is this old (in-flight requests are not)
    /// [default: 5s].
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub context_grace: Option<Duration>,
    /// Do not probe the context package (two probes: context creation, registration under a
    /// parent; three with --cancel-probe); goroutine metrics only.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    #[serde(default)]
    pub no_contexts: Option<bool>,
    /// Probe `(*cancelCtx).cancel` to see each context's cancellation as it happens. By
    /// default cancellations are read from the target's memory instead (each tracked
    /// context's `err`, every second): one trap fewer per context, cancellations known to
    /// within about a second.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    #[serde(default)]
    pub cancel_probe: Option<bool>,
    /// Count each probe's runs and run time in the kernel and export them
    /// (ctxleak_probe_runs_total, ctxleak_probe_run_seconds_total): what ctxleak costs the
    /// target, probe by probe. Costs two clock reads per probe hit; needs CAP_SYS_ADMIN.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    #[serde(default)]
    pub probe_stats: Option<bool>,
    /// What the probes may cost the target, as a share of one CPU: 1%, 0.5%, ... Each probe
    /// hit costs the target about a microsecond; under a budget, ctxleak estimates the cost
    /// from the hits it sees and switches the probes off and on in windows so that it
    /// averages at most the budget (ctxleak_probe_duty_ratio says how much of the time they
    /// were on). Goroutine counts and stacks come from memory either way: while the probes
    /// are off, the user and system counts are the runtime's own arithmetic, read every
    /// second, exactly runtime.NumGoroutine() whenever the program is not starting or ending
    /// goroutines at that instant; created comes from the goid allocator (ahead by at most
    /// 16 x GOMAXPROCS goids that the Ps hold unused) and exited is created minus the change
    /// in live goroutines; context findings are samples while the probes are off part of
    /// the time. 0: memory only (no probes, no context findings); exact: probes always on,
    /// whatever they cost [default: 1%; with --park-times: exact].
    #[arg(long, value_name = "SHARE", value_parser = probe_policy)]
    #[serde(default, deserialize_with = "de::probe_policy")]
    pub max_overhead: Option<ProbePolicy>,
}

/// Where metrics are served: `attach` and `daemon` (`[web]` in the config file).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebFlags {
    /// Address for the Prometheus metrics endpoint (/metrics): host:port, or
    /// :port for every interface [default: 127.0.0.1:9789].
    #[arg(long = "web.listen-address", value_name = "LISTEN", value_parser = listen_address)]
    #[serde(default, deserialize_with = "de::listen_address")]
    pub listen_address: Option<ListenAddress>,
}

impl WebFlags {
    /// The address given, or [`DEFAULT_LISTEN`].
    pub fn listen(self) -> ListenAddress {
        self.listen_address.unwrap_or(DEFAULT_LISTEN)
    }
}

/// How ctxleak logs: `daemon` (`[log]` in the config file).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogFlags {
    /// Log format on stderr: text, or json (one object per line) [default: text]. The level
    /// comes from CTXLEAK_LOG (default info).
    #[arg(long = "log.format", value_name = "LOG_FORMAT", value_enum)]
    #[serde(default, deserialize_with = "de::log_format")]
    pub format: Option<LogFormat>,
}

/// The options only `ctxleak daemon` has: which processes, how often /proc is rescanned,
/// where metrics are served, how it logs.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiscoveryFlags {
    #[command(flatten)]
    #[serde(default)]
    pub web: WebFlags,
    /// Watch only processes whose executable path matches this glob (`*` stays within a
    /// directory, `**` crosses them). Repeat for several; with no filter, every Go process.
    #[arg(long, value_name = "GLOB", value_parser = glob)]
    #[serde(default, deserialize_with = "de::globs")]
    pub exe: Vec<String>,
    /// Watch only processes whose name (/proc/PID/comm, 15 characters) matches this glob.
    #[arg(long, value_name = "GLOB", value_parser = glob)]
    #[serde(default, deserialize_with = "de::globs")]
    pub process_name: Vec<String>,
    /// Watch only processes whose cgroup path matches this glob (e.g. '/kubepods*/**' for
    /// Kubernetes pods, '/system.slice/myapp.service' for one systemd service).
    #[arg(long, value_name = "GLOB", value_parser = glob)]
    #[serde(default, deserialize_with = "de::globs")]
    pub cgroup: Vec<String>,
    /// How often /proc is scanned for processes the exec tracepoint could have missed
    /// (at least 1s) [default: 10s].
    #[arg(long, value_parser = rescan_interval)]
    #[serde(default, deserialize_with = "de::rescan_interval")]
    pub rescan_interval: Option<Duration>,
    #[command(flatten)]
    #[serde(default)]
    pub log: LogFlags,
}

/// Every option of `ctxleak daemon`, flags and config keys alike: the watch options of
/// `attach` and its own. Its config file fills both parts (see [`crate::config::parse_str`]).
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct DaemonFlags {
    #[command(flatten)]
    pub discovery: DiscoveryFlags,
    #[command(flatten)]
    pub watch: WatchFlags,
}

/// An option that says how often something is done, with the shortest period that makes
/// sense: one definition for the flag and the config key, which [`Period::check`] applies
/// to both. Zero, or a nanosecond, would run the work without pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// The shortest value accepted.
    pub min: Duration,
    /// Why shorter makes no sense, for the error.
    why: &'static str,
}

/// `--census-interval`, `census-interval`: at least 100ms, the floor of `ctxleak top
/// --interval`. Nothing reads a census more often (the per-second line, `top`, a scrape
/// every few seconds), and each costs ctxleak CPU in proportion to the target's goroutines
/// (1.3–1.9 s for a million): a nanosecond burned three CPU-seconds in four seconds.
pub const CENSUS_INTERVAL: Period = Period {
    min: Duration::from_millis(100),
    why: "a census more often costs CPU and shows nothing new",
};

/// `--rescan-interval`, `rescan-interval`: at least 1s. The exec tracepoint finds new
/// processes as they start; the rescan of `/proc` is a safety net for the ones it missed, a
/// walk of every process that a shorter period would repeat for nothing.
pub const RESCAN_INTERVAL: Period = Period {
    min: Duration::from_secs(1),
    why: "the exec tracepoint finds new processes at once; rescans of /proc only catch what it missed",
};

impl Period {
    /// `period` (written `text`) if it is no shorter than [`Period::min`], else the one-line
    /// reason and fix.
    pub fn check(&self, period: Duration, text: &str) -> Result<Duration, String> {
        if period < self.min {
            return Err(format!(
                "\"{text}\" is too short: give {} or more ({})",
                humantime::format_duration(self.min),
                self.why
            ));
        }
        Ok(period)
    }
}

// The parsers: each option's one check, for its flag and its config key. A config value
// reaches them as text (see `de::scalar`), so both say the same thing about the same value.

/// A duration such as `5s`, `1m`, `1h 30m` or `500ms`.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| {
        format!("\"{text}\" is not a duration: {error} (write it like \"5s\", \"1m\" or \"500ms\")")
    })
}

/// `census-interval`: a duration of at least [`CENSUS_INTERVAL`].
pub fn census_interval(text: &str) -> Result<Duration, String> {
    CENSUS_INTERVAL.check(duration(text)?, text)
}

/// `rescan-interval`: a duration of at least [`RESCAN_INTERVAL`].
pub fn rescan_interval(text: &str) -> Result<Duration, String> {
    RESCAN_INTERVAL.check(duration(text)?, text)
}

/// `ring-buffer-size`: bytes, a power of two of at least 4096.
pub fn ring_buffer_size(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|bytes| *bytes >= 4096 && bytes.is_power_of_two())
        .ok_or_else(|| {
            format!("{text} is not a power of two from 4096 to 2147483648 (such as 4194304, 4 MiB)")
        })
}

/// `suspect-min-growth`: a number of goroutines.
pub fn goroutines(text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text} is not a number of goroutines (give 0 or more)"))
}

/// `suspect-min-growth-percent`: a percentage (`10` or `10%`), checked by
/// [`crate::groups::check_growth_percent`].
pub fn growth_percent(text: &str) -> Result<f64, String> {
    let percent: f64 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{text:?} is not a number (a percentage such as 10)"))?;
    crate::groups::check_growth_percent(percent)
}

/// `max-overhead`: `1%`, `0` or `exact` (see [`ProbePolicy`]).
pub fn probe_policy(text: &str) -> Result<ProbePolicy, String> {
    text.parse()
}

/// `web.listen-address`: see [`ListenAddress`].
pub fn listen_address(text: &str) -> Result<ListenAddress, String> {
    text.parse().map_err(|error| format!("\"{text}\": {error}"))
}

/// `log.format`: one of [`LogFormat`]'s names, which clap's `value_enum` also takes.
pub fn log_format(text: &str) -> Result<LogFormat, String> {
    use clap::ValueEnum as _;
    LogFormat::from_str(text, false).map_err(|_| {
        let names: Vec<String> = LogFormat::value_variants()
            .iter()
            .filter_map(|format| Some(format!("\"{}\"", format.to_possible_value()?.get_name())))
            .collect();
        format!("\"{text}\" is none of {}", names.join(", "))
    })
}

/// `exe`, `process-name`, `cgroup`: a glob that compiles (matched by `discover::Filters`).
pub fn glob(text: &str) -> Result<String, String> {
    crate::discover::glob(text)
        .map(|_| text.to_owned())
        .map_err(|error| format!("bad glob \"{text}\": {}", error.kind()))
}

/// The parsers above as serde's `deserialize_with`: a config value, written as a TOML string
/// or number, goes through the flag's parser as text.
mod de {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{Error, SeqAccess, Visitor};

    /// A TOML string or number, as the text a flag would carry.
    struct Scalar;

    impl Visitor<'_> for Scalar {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a number")
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<String, E> {
            Ok(text.to_owned())
        }

        fn visit_i64<E: Error>(self, number: i64) -> Result<String, E> {
            Ok(number.to_string())
        }

        fn visit_u64<E: Error>(self, number: u64) -> Result<String, E> {
            Ok(number.to_string())
        }

        fn visit_f64<E: Error>(self, number: f64) -> Result<String, E> {
            Ok(number.to_string())
        }
    }

    /// One value, through `parse`.
    fn scalar<'de, D: Deserializer<'de>, T>(
        deserializer: D,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, D::Error> {
        let text = deserializer.deserialize_any(Scalar)?;
        parse(&text).map(Some).map_err(D::Error::custom)
    }

    /// Defines `name` as the `deserialize_with` of the parser of the same name.
    macro_rules! from_text {
        ($($name:ident -> $value:ty;)*) => {$(
            pub(super) fn $name<'de, D: Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Option<$value>, D::Error> {
                scalar(deserializer, super::$name)
            }
        )*};
    }

    from_text! {
        duration -> std::time::Duration;
        census_interval -> std::time::Duration;
        rescan_interval -> std::time::Duration;
        ring_buffer_size -> u32;
        goroutines -> u64;
        growth_percent -> f64;
        probe_policy -> crate::budget::ProbePolicy;
        listen_address -> crate::config::ListenAddress;
        log_format -> crate::config::LogFormat;
    }

    /// A list of globs, each through [`super::glob`].
    struct Globs;

    impl<'de> Visitor<'de> for Globs {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of globs")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut globs = Vec::new();
            while let Some(text) = seq.next_element::<String>()? {
                globs.push(super::glob(&text).map_err(A::Error::custom)?);
            }
            Ok(globs)
        }
    }

    pub(super) fn globs<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<String>, D::Error> {
        deserializer.deserialize_seq(Globs)
    }
}

#[cfg(feature = "probes")]
impl WatchFlags {
    /// The options with their defaults where none was given. `per_process` and the floor
    /// programs are not options of the user's (see [`crate::watcher::WatchOptions`]).
    pub fn watch_options(&self) -> crate::watcher::WatchOptions {
        use crate::groups::SuspectRules;
        let rules = SuspectRules::default();
        let park_times = self.park_times.unwrap_or(false);
        crate::watcher::WatchOptions {
            probe_mode: crate::probes::ProbeMode {
                park_times,
                floor: false,
                floor_spin_ns: 0,
                no_contexts: self.no_contexts.unwrap_or(false),
                releases_from_memory: !self.cancel_probe.unwrap_or(false),
                run_stats: self.probe_stats.unwrap_or(false),
            },
            judgement: crate::session::Judgement {
                suspect_rules: SuspectRules {
                    window_short: self.suspect_window_short.unwrap_or(rules.window_short),
                    window_long: self.suspect_window_long.unwrap_or(rules.window_long),
                    min_age: self.suspect_min_age.unwrap_or(rules.min_age),
                    min_growth: self.suspect_min_growth.unwrap_or(rules.min_growth),
                    min_growth_percent: self
                        .suspect_min_growth_percent
                        .unwrap_or(rules.min_growth_percent),
                    stuck_after: self.stuck_after.unwrap_or(rules.stuck_after),
                },
                context_grace: self.context_grace.unwrap_or(DEFAULT_CONTEXT_GRACE),
            },
            census_interval: self.census_interval.unwrap_or(DEFAULT_CENSUS_INTERVAL),
            per_process: false,
            policy: ProbePolicy::resolve(self.max_overhead, park_times),
        }
    }

    /// The probe event ring's size in bytes.
    pub fn ring_bytes(&self) -> u32 {
        self.ring_buffer_size
            .unwrap_or(ctxleak_common::EVENTS_RING_BYTES)
    }
}

#[cfg(feature = "probes")]
impl DaemonFlags {
    /// The options with their defaults where neither a flag nor the file gave one.
    pub fn options(self) -> anyhow::Result<crate::daemon::DaemonOptions> {
        let discovery = self.discovery;
        Ok(crate::daemon::DaemonOptions {
            listen: discovery.web.listen(),
            ring_bytes: self.watch.ring_bytes(),
            watch: self.watch.watch_options(),
            filters: crate::discover::Filters::new(
                &discovery.exe,
                &discovery.process_name,
                &discovery.cgroup,
            )?,
            rescan_interval: discovery.rescan_interval.unwrap_or(DEFAULT_RESCAN_INTERVAL),
        })
    }
}

impl LogFlags {
    /// The format given, or text.
    pub fn format_or_text(&self) -> LogFormat {
        self.format.unwrap_or(LogFormat::Text)
    }
}

#[cfg(all(test, feature = "probes"))]
mod tests {
    use clap::{Args as _, FromArgMatches as _};

    use super::*;

    /// What `ctxleak daemon` runs with, given `flags` (the filters aside), to compare.
    fn resolved(flags: &DaemonFlags) -> String {
        let discovery = &flags.discovery;
        format!(
            "{:?} {} {} {:?} {:?}",
            flags.watch.watch_options(),
            flags.watch.ring_bytes(),
            discovery.web.clone().listen(),
            discovery.rescan_interval.unwrap_or(DEFAULT_RESCAN_INTERVAL),
            discovery.log.format_or_text(),
        )
    }

    /// The `[default: X]` of each help text is the typed default: `--flag X` changes nothing.
    #[test]
    fn help_defaults_are_the_typed_defaults() {
        let command = DaemonFlags::augment_args(clap::Command::new("daemon"));
        let none = resolved(&DaemonFlags::default());
        let mut checked = Vec::new();
        for arg in command.get_arguments() {
            let (Some(long), Some(help)) = (arg.get_long(), arg.get_help()) else {
                continue;
            };
            let help = help.to_string();
            let Some((_, default)) = help.split_once("[default: ") else {
                continue;
            };
            let default = &default[..default.find([']', ';']).unwrap_or(default.len())];
            let matches = command
                .clone()
                .try_get_matches_from(["daemon", &format!("--{long}"), default])
                .unwrap_or_else(|error| panic!("--{long} {default}: {error}"));
            let given = DaemonFlags::from_arg_matches(&matches).unwrap();
            assert_eq!(
                resolved(&given),
                none,
                "--{long}'s help says [default: {default}]"
            );
            checked.push(long);
        }
        assert_eq!(checked.len(), 13, "{checked:?}");
    }

    /// deploy/systemd/ctxleak.toml says its values are the defaults.
    #[test]
    fn shipped_systemd_config_is_the_defaults() {
        let path = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/systemd/ctxleak.toml"
        ));
        let file = crate::config::load(path).unwrap();
        assert_eq!(file.watch.census_interval, Some(DEFAULT_CENSUS_INTERVAL));
        assert_eq!(resolved(&file), resolved(&DaemonFlags::default()));
    }
}
