//! The TOML config file of `ctxleak daemon` (`--config FILE`), and the listen address type
//! shared with the `--web.listen-address` flag.
//!
//! The file holds defaults and the command line overrides them, so every key is a long flag
//! without its `--`, and every value is optional here: [`DaemonConfig`] says only what the
//! file set. A dotted flag is a key in a table (`--web.listen-address` is `listen-address`
//! in `[web]`). Unknown keys are errors, so a misspelt key cannot silently keep a default.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// Every key the file accepts; a key in a table is written `table.key`, like its flag.
pub const KEYS: &[&str] = &[
    "census-interval",
    "suspect-window-short",
    "suspect-window-long",
    "suspect-min-age",
    "suspect-min-growth",
    "suspect-min-growth-percent",
    "stuck-after",
    "context-grace",
    "rescan-interval",
    "ring-buffer-size",
    "park-times",
    "no-contexts",
    "probe-stats",
    "max-overhead",
    "exe",
    "process-name",
    "cgroup",
    "web.listen-address",
    "log.format",
];

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

/// What a config file set; `None` or empty where it said nothing, so the flag's default
/// (or the flag itself) applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DaemonConfig {
    pub census_interval: Option<Duration>,
    pub suspect_window_short: Option<Duration>,
    pub suspect_window_long: Option<Duration>,
    pub suspect_min_age: Option<Duration>,
    /// Goroutines.
    pub suspect_min_growth: Option<u64>,
    /// Percent, checked by [`crate::groups::check_growth_percent`].
    pub suspect_min_growth_percent: Option<f64>,
    pub stuck_after: Option<Duration>,
    pub context_grace: Option<Duration>,
    pub rescan_interval: Option<Duration>,
    /// Bytes: a power of two, at least 4096.
    pub ring_buffer_size: Option<u32>,
    pub park_times: Option<bool>,
    pub no_contexts: Option<bool>,
    pub probe_stats: Option<bool>,
    /// `max-overhead`: "1%", "0" or "exact".
    pub max_overhead: Option<crate::budget::ProbePolicy>,
    /// Globs on the executable's path (checked to compile; matched by `discover::Filters`).
    pub exe: Vec<String>,
    /// Globs on the process name (`/proc/PID/comm`).
    pub process_name: Vec<String>,
    /// Globs on the cgroup path.
    pub cgroup: Vec<String>,
    /// `[web] listen-address`.
    pub listen_address: Option<ListenAddress>,
    /// `[log] format`.
    pub log_format: Option<LogFormat>,
}

/// How log lines are written (`--log.format`, `[log] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}, line {line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: unknown key \"{key}\" ({hint})", path.display())]
    UnknownKey {
        path: PathBuf,
        key: String,
        hint: String,
    },
    #[error("{}: {key}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

/// The file as written, before the values are checked. Every level denies unknown fields;
/// [`unknown_key`] runs first only to name the key the way the flags do.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    census_interval: Option<String>,
    suspect_window_short: Option<String>,
    suspect_window_long: Option<String>,
    suspect_min_age: Option<String>,
    suspect_min_growth: Option<i64>,
    suspect_min_growth_percent: Option<f64>,
    stuck_after: Option<String>,
    context_grace: Option<String>,
    rescan_interval: Option<String>,
    ring_buffer_size: Option<i64>,
    park_times: Option<bool>,
    no_contexts: Option<bool>,
    probe_stats: Option<bool>,
    max_overhead: Option<String>,
    #[serde(default)]
    exe: Vec<String>,
    #[serde(default)]
    process_name: Vec<String>,
    #[serde(default)]
    cgroup: Vec<String>,
    web: Option<RawWeb>,
    log: Option<RawLog>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawWeb {
    listen_address: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLog {
    format: Option<String>,
}

impl DaemonConfig {
    /// Reads and checks the config file at `path`.
    pub fn load(path: &Path) -> Result<DaemonConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks the text of a config file; `path` is only for error messages.
    pub fn parse(text: &str, path: &Path) -> Result<DaemonConfig, ConfigError> {
        let syntax = |error: toml::de::Error| {
            let start = error.span().map_or(0, |span| span.start.min(text.len()));
            let line = text.as_bytes()[..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                message: error.message().trim().replace('\n', "; "),
            }
        };
        let table: toml::Table = toml::from_str(text).map_err(syntax)?;
        if let Some((key, hint)) = unknown_key(&table) {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
                hint,
            });
        }
        let raw: RawConfig = toml::from_str(text).map_err(syntax)?;
        raw.check().map_err(|(key, reason)| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        })
    }
}

/// The first key of `table` not in [`KEYS`], dotted if it is in a table, with a hint.
fn unknown_key(table: &toml::Table) -> Option<(String, String)> {
    let is_table_name = |name: &str| {
        KEYS.iter()
            .any(|key| key.split_once('.').is_some_and(|(t, _)| t == name))
    };
    for (key, value) in table {
        match value {
            toml::Value::Table(inner) if is_table_name(key) => {
                for inner_key in inner.keys() {
                    let dotted = format!("{key}.{inner_key}");
                    if !KEYS.contains(&dotted.as_str()) {
                        return Some((dotted, default_hint()));
                    }
                }
            }
            // A table's name with a value that is not a table: serde names the wrong type.
            _ if KEYS.contains(&key.as_str()) || is_table_name(key) => {}
            _ => {
                let hint = KEYS
                    .iter()
                    .find_map(|known| {
                        let (table, name) = known.split_once('.')?;
                        (name == key).then(|| format!("it goes in the table [{table}]"))
                    })
                    .unwrap_or_else(default_hint);
                return Some((key.clone(), hint));
            }
        }
    }
    None
}

fn default_hint() -> String {
    "the keys are the daemon's long flags: see ctxleak daemon --help".to_owned()
}

type Invalid = (&'static str, String);

impl RawConfig {
    fn check(self) -> Result<DaemonConfig, Invalid> {
        let exe = globs("exe", self.exe)?;
        let process_name = globs("process-name", self.process_name)?;
        let cgroup = globs("cgroup", self.cgroup)?;
        let listen_address = self
            .web
            .and_then(|web| web.listen_address)
            .map(|text| {
                text.parse::<ListenAddress>()
                    .map_err(|error| ("web.listen-address", format!("\"{text}\": {error}")))
            })
            .transpose()?;
        let log_format = self
            .log
            .and_then(|log| log.format)
            .map(|text| match text.as_str() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err((
                    "log.format",
                    format!("\"{text}\" is neither \"text\" nor \"json\""),
                )),
            })
            .transpose()?;
        Ok(DaemonConfig {
            census_interval: period("census-interval", CENSUS_INTERVAL, self.census_interval)?,
            suspect_window_short: duration("suspect-window-short", self.suspect_window_short)?,
            suspect_window_long: duration("suspect-window-long", self.suspect_window_long)?,
            suspect_min_age: duration("suspect-min-age", self.suspect_min_age)?,
            suspect_min_growth: self
                .suspect_min_growth
                .map(|count| {
                    u64::try_from(count).map_err(|_| {
                        (
                            "suspect-min-growth",
                            format!("{count} is not a number of goroutines (give 0 or more)"),
                        )
                    })
                })
                .transpose()?,
            suspect_min_growth_percent: self
                .suspect_min_growth_percent
                .map(|percent| {
                    crate::groups::check_growth_percent(percent)
                        .map_err(|reason| ("suspect-min-growth-percent", reason))
                })
                .transpose()?,
            stuck_after: duration("stuck-after", self.stuck_after)?,
            context_grace: duration("context-grace", self.context_grace)?,
            rescan_interval: period("rescan-interval", RESCAN_INTERVAL, self.rescan_interval)?,
            ring_buffer_size: self.ring_buffer_size.map(ring_buffer_size).transpose()?,
            park_times: self.park_times,
            no_contexts: self.no_contexts,
            probe_stats: self.probe_stats,
            max_overhead: self
                .max_overhead
                .map(|text| text.parse().map_err(|error| ("max-overhead", error)))
                .transpose()?,
            exe,
            process_name,
            cgroup,
            listen_address,
            log_format,
        })
    }
}

fn duration(key: &'static str, text: Option<String>) -> Result<Option<Duration>, Invalid> {
    text.map(|text| parse_duration(key, &text)).transpose()
}

fn parse_duration(key: &'static str, text: &str) -> Result<Duration, Invalid> {
    humantime::parse_duration(text).map_err(|error| {
        (
            key,
            format!(
                "\"{text}\" is not a duration: {error} (write it like \"5s\", \"1m\" or \"500ms\")"
            ),
        )
    })
}

/// A duration that is the period of something repeated: no shorter than `rule` says.
fn period(
    key: &'static str,
    rule: Period,
    text: Option<String>,
) -> Result<Option<Duration>, Invalid> {
    text.map(|text| {
        let period = parse_duration(key, &text)?;
        rule.check(period, &text).map_err(|reason| (key, reason))
    })
    .transpose()
}

fn ring_buffer_size(bytes: i64) -> Result<u32, Invalid> {
    u32::try_from(bytes)
        .ok()
        .filter(|bytes| *bytes >= 4096 && bytes.is_power_of_two())
        .ok_or_else(|| {
            (
                "ring-buffer-size",
                format!(
                    "{bytes} is not a power of two from 4096 to 2147483648 (such as 4194304, 4 MiB)"
                ),
            )
        })
}

fn globs(key: &'static str, globs: Vec<String>) -> Result<Vec<String>, Invalid> {
    for glob in &globs {
        crate::discover::glob(glob)
            .map_err(|error| (key, format!("bad glob \"{glob}\": {}", error.kind())))?;
    }
    Ok(globs)
}

/// Where to serve metrics, written as node_exporter's `--web.listen-address` is: `:9789`
/// (every interface, IPv6 and IPv4), `127.0.0.1:9789`, `[::1]:9789`, `localhost:9789`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddress {
    /// `:PORT`: every interface, both address families where the host has IPv6.
    AllInterfaces { port: u16 },
    /// A literal IP address and port.
    Socket(SocketAddr),
    /// A host name, resolved when binding.
    Host { host: String, port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenAddressError {
    #[error("missing port: write HOST:PORT or :PORT, such as :9789 or 127.0.0.1:9789")]
    MissingPort,
    #[error("bad port \"{0}\": the port is a number from 0 to 65535")]
    BadPort(String),
    #[error("an IPv6 address needs brackets: write it like [::1]:9789")]
    UnbracketedIpv6,
    #[error("\"{0}\" in brackets is not an IPv6 address: write it like [::1]:9789")]
    BadIpv6(String),
    #[error("\"{0}\" is not an IP address or host name")]
    BadHost(String),
}

impl ListenAddress {
    /// The port, 0 for one the kernel picks.
    pub fn port(&self) -> u16 {
        match self {
            Self::AllInterfaces { port } | Self::Host { port, .. } => *port,
            Self::Socket(address) => address.port(),
        }
    }

    /// Opens the listening socket. `:PORT` binds `[::]:PORT` with IPv4 mapped in (whatever
    /// `net.ipv6.bindv6only` says), and `0.0.0.0:PORT` where the host has no IPv6. A host
    /// name is resolved, and the first of its addresses that binds wins.
    pub async fn bind(&self) -> io::Result<tokio::net::TcpListener> {
        match self {
            Self::AllInterfaces { port } => match bind_dual_stack(*port) {
                Ok(listener) => tokio::net::TcpListener::from_std(listener),
                Err(error)
                    if matches!(
                        error.raw_os_error(),
                        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
                    ) =>
                {
                    tokio::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, *port)).await
                }
                Err(error) => Err(error),
            },
            Self::Socket(address) => tokio::net::TcpListener::bind(address).await,
            Self::Host { host, port } => {
                let mut last_error = None;
                for address in tokio::net::lookup_host((host.as_str(), *port)).await? {
                    match tokio::net::TcpListener::bind(address).await {
                        Ok(listener) => return Ok(listener),
                        Err(error) => last_error = Some(error),
                    }
                }
                Err(last_error.unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{host} resolves to no address"),
                    )
                }))
            }
        }
    }
}

fn bind_dual_stack(port: u16) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    // As std and tokio do: a restarted daemon can bind again while old connections linger.
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

impl From<SocketAddr> for ListenAddress {
    fn from(address: SocketAddr) -> Self {
        Self::Socket(address)
    }
}

impl FromStr for ListenAddress {
    type Err = ListenAddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = text.strip_prefix('[') {
            let (ip, port) = rest
                .split_once(']')
                .ok_or_else(|| ListenAddressError::BadIpv6(rest.to_owned()))?;
            let ip: Ipv6Addr = ip
                .parse()
                .map_err(|_| ListenAddressError::BadIpv6(ip.to_owned()))?;
            let port = match port.strip_prefix(':') {
                Some(port) => parse_port(port)?,
                None if port.is_empty() => return Err(ListenAddressError::MissingPort),
                None => return Err(ListenAddressError::BadPort(port.to_owned())),
            };
            return Ok(Self::Socket(SocketAddr::from((ip, port))));
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or(ListenAddressError::MissingPort)?;
        if host.contains(':') {
            return Err(ListenAddressError::UnbracketedIpv6);
        }
        let port = parse_port(port)?;
        if host.is_empty() {
            return Ok(Self::AllInterfaces { port });
        }
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            let ip: Ipv4Addr = host
                .parse()
                .map_err(|_| ListenAddressError::BadHost(host.to_owned()))?;
            return Ok(Self::Socket(SocketAddr::from((IpAddr::V4(ip), port))));
        }
        let is_host_name = host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if !is_host_name || host.len() > 253 {
            return Err(ListenAddressError::BadHost(host.to_owned()));
        }
        Ok(Self::Host {
            host: host.to_owned(),
            port,
        })
    }
}

fn parse_port(port: &str) -> Result<u16, ListenAddressError> {
    if port.is_empty() {
        return Err(ListenAddressError::MissingPort);
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ListenAddressError::BadPort(port.to_owned()));
    }
    port.parse()
        .map_err(|_| ListenAddressError::BadPort(port.to_owned()))
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AllInterfaces { port } => write!(f, ":{port}"),
            Self::Socket(address) => write!(f, "{address}"),
            Self::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DaemonConfig, ConfigError> {
        DaemonConfig::parse(text, Path::new("/etc/ctxleak/ctxleak.toml"))
    }

    /// A valid TOML snippet setting `key` (as written in [`KEYS`]).
    fn sample(key: &str) -> String {
        let value = match key {
            "ring-buffer-size" => "65536",
            "park-times" | "no-contexts" | "probe-stats" => "true",
            "exe" | "process-name" | "cgroup" => r#"["/usr/bin/*"]"#,
            "web.listen-address" => r#"":9789""#,
            "log.format" => r#""json""#,
            "max-overhead" => r#""2.5%""#,
            "suspect-min-growth" | "suspect-min-growth-percent" => "7",
            _ => r#""7s""#,
        };
        match key.split_once('.') {
            Some((table, name)) => format!("[{table}]\n{name} = {value}\n"),
            None => format!("{key} = {value}\n"),
        }
    }

    #[test]
    fn every_key_alone_parses_and_sets_something() {
        for key in KEYS {
            let config = parse(&sample(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_ne!(config, DaemonConfig::default(), "{key} set nothing");
        }
    }

    #[test]
    fn all_keys_set_every_field() {
        // Top-level keys first, then the tables.
        let mut keys: Vec<&str> = KEYS.to_vec();
        keys.sort_by_key(|key| key.contains('.'));
        let text: String = keys.iter().map(|key| sample(key)).collect();
        let config = parse(&text).unwrap();
        let seven = Some(Duration::from_secs(7));
        assert_eq!(
            config,
            DaemonConfig {
                census_interval: seven,
                suspect_window_short: seven,
                suspect_window_long: seven,
                suspect_min_age: seven,
                suspect_min_growth: Some(7),
                suspect_min_growth_percent: Some(7.0),
                stuck_after: seven,
                context_grace: seven,
                rescan_interval: seven,
                ring_buffer_size: Some(65536),
                park_times: Some(true),
                no_contexts: Some(true),
                probe_stats: Some(true),
                max_overhead: Some(crate::budget::ProbePolicy::Budget { share: 0.025 }),
                exe: vec!["/usr/bin/*".into()],
                process_name: vec!["/usr/bin/*".into()],
                cgroup: vec!["/usr/bin/*".into()],
                listen_address: Some(ListenAddress::AllInterfaces { port: 9789 }),
                log_format: Some(LogFormat::Json),
            }
        );
    }

    #[test]
    fn empty_file_sets_nothing() {
        assert_eq!(parse("").unwrap(), DaemonConfig::default());
        assert_eq!(
            parse("# only a comment\n").unwrap(),
            DaemonConfig::default()
        );
    }

    #[test]
    fn values() {
        let config = parse(
            "census-interval = \"500ms\"\nsuspect-window-long = \"1h 30m\"\n\
             exe = [\"/usr/local/bin/*\", \"/opt/**\"]\n[log]\nformat = \"text\"\n\
             [web]\nlisten-address = \"[::1]:9789\"\n",
        )
        .unwrap();
        assert_eq!(config.census_interval, Some(Duration::from_millis(500)));
        assert_eq!(config.suspect_window_long, Some(Duration::from_secs(5400)));
        assert_eq!(config.exe, ["/usr/local/bin/*", "/opt/**"]);
        assert_eq!(config.log_format, Some(LogFormat::Text));
        assert_eq!(
            config.listen_address,
            Some(ListenAddress::Socket("[::1]:9789".parse().unwrap()))
        );
        // A dotted key is the same as the table.
        let config = parse("web.listen-address = \"localhost:9789\"\n").unwrap();
        assert_eq!(config.listen_address.unwrap().to_string(), "localhost:9789");
    }

    #[test]
    fn shortest_periods_are_accepted() {
        let config = parse("census-interval = \"100ms\"\nrescan-interval = \"1s\"\n").unwrap();
        assert_eq!(config.census_interval, Some(CENSUS_INTERVAL.min));
        assert_eq!(config.rescan_interval, Some(RESCAN_INTERVAL.min));
        assert_eq!(
            CENSUS_INTERVAL.check(Duration::from_nanos(1), "1ns"),
            Err(
                "\"1ns\" is too short: give 100ms or more (a census more often costs CPU and shows \
                 nothing new)"
                    .to_owned()
            )
        );
    }

    #[test]
    fn unknown_keys() {
        let error = parse("census-intreval = \"5s\"\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "/etc/ctxleak/ctxleak.toml: unknown key \"census-intreval\" (the keys are the \
             daemon's long flags: see ctxleak daemon --help)"
        );
        let error = parse("[web]\nlisten-adress = \":1\"\n").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown key \"web.listen-adress\""),
            "{error}"
        );
        let error = parse("listen-address = \":1\"\n").unwrap_err();
        assert!(
            error.to_string().contains("it goes in the table [web]"),
            "{error}"
        );
        let error = parse("[metrics]\nport = 1\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown key \"metrics\""),
            "{error}"
        );
        let error = parse("[web.tls]\ncert = \"x\"\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown key \"web.tls\""),
            "{error}"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, expected) in [
            (
                "census-interval = \"5x\"\n",
                "census-interval: \"5x\" is not a duration",
            ),
            (
                "context-grace = \"soon\"\n",
                "context-grace: \"soon\" is not a duration",
            ),
            (
                "census-interval = \"0s\"\n",
                "census-interval: \"0s\" is too short: give 100ms or more (a census more often",
            ),
            (
                "census-interval = \"1ns\"\n",
                "census-interval: \"1ns\" is too short: give 100ms or more",
            ),
            (
                "census-interval = \"99ms\"\n",
                "census-interval: \"99ms\" is too short: give 100ms or more",
            ),
            (
                "rescan-interval = \"0s\"\n",
                "rescan-interval: \"0s\" is too short: give 1s or more (the exec tracepoint",
            ),
            (
                "rescan-interval = \"999ms\"\n",
                "rescan-interval: \"999ms\" is too short: give 1s or more",
            ),
            (
                "ring-buffer-size = 1000\n",
                "ring-buffer-size: 1000 is not a power of two",
            ),
            (
                "ring-buffer-size = 2048\n",
                "ring-buffer-size: 2048 is not a power of two",
            ),
            (
                "ring-buffer-size = -4096\n",
                "ring-buffer-size: -4096 is not",
            ),
            (
                "ring-buffer-size = 4294967296\n",
                "ring-buffer-size: 4294967296 is not",
            ),
            ("exe = [\"/usr/[bin\"]\n", "exe: bad glob \"/usr/[bin\""),
            ("cgroup = [\"{a\"]\n", "cgroup: bad glob"),
            (
                "[web]\nlisten-address = \"9789\"\n",
                "web.listen-address: \"9789\": missing port",
            ),
            (
                "[log]\nformat = \"xml\"\n",
                "log.format: \"xml\" is neither",
            ),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(
                error.starts_with("/etc/ctxleak/ctxleak.toml: ") && error.contains(expected),
                "{text:?}: {error}"
            );
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn wrong_types_and_syntax_give_a_line() {
        for (text, line) in [
            ("park-times = true\ncensus-interval = 5\n", 2),
            ("park-times = \"yes\"\n", 1),
            ("exe = \"/usr/bin/*\"\n", 1),
            ("\n\ncensus-interval = \n", 3),
            ("web = 1\n", 1),
        ] {
            let error = parse(text).unwrap_err();
            let ConfigError::Syntax { line: got, .. } = &error else {
                panic!("{text:?}: {error}");
            };
            assert_eq!(*got, line, "{text:?}: {error}");
            assert!(!error.to_string().contains('\n'), "{error}");
        }
    }

    #[test]
    fn load_reports_a_missing_file() {
        let error = DaemonConfig::load(Path::new("/x.toml")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot read the config file /x.toml: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn shipped_systemd_config_parses() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/systemd/ctxleak.toml"
        ));
        let config = DaemonConfig::load(path).unwrap();
        assert_eq!(config.census_interval, Some(Duration::from_secs(5)));
        assert!(config.listen_address.is_some());
    }

    #[test]
    fn shipped_kubernetes_config_parses() {
        let yaml = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/kubernetes/ctxleak.yaml"
        ))
        .unwrap();
        let text: String = yaml
            .lines()
            .skip_while(|line| line.trim() != "ctxleak.toml: |")
            .skip(1)
            .take_while(|line| !line.starts_with("---"))
            .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
            .collect();
        assert!(
            text.contains("census-interval"),
            "no ConfigMap in the manifest"
        );
        let config = DaemonConfig::parse(&text, Path::new("ctxleak.yaml")).unwrap();
        assert_eq!(config.census_interval, Some(Duration::from_secs(5)));
    }

    #[test]
    fn listen_addresses() {
        for (text, expected) in [
            (":9789", ListenAddress::AllInterfaces { port: 9789 }),
            (":0", ListenAddress::AllInterfaces { port: 0 }),
            (
                "0.0.0.0:9789",
                ListenAddress::Socket("0.0.0.0:9789".parse().unwrap()),
            ),
            (
                "127.0.0.1:0",
                ListenAddress::Socket("127.0.0.1:0".parse().unwrap()),
            ),
            (
                "[::1]:9789",
                ListenAddress::Socket("[::1]:9789".parse().unwrap()),
            ),
            (
                "[::]:9789",
                ListenAddress::Socket("[::]:9789".parse().unwrap()),
            ),
            (
                "localhost:9789",
                ListenAddress::Host {
                    host: "localhost".into(),
                    port: 9789,
                },
            ),
            (
                "host.example:65535",
                ListenAddress::Host {
                    host: "host.example".into(),
                    port: 65535,
                },
            ),
        ] {
            let parsed: ListenAddress = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed, expected, "{text}");
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(":9789".parse::<ListenAddress>().unwrap().port(), 9789);
    }

    #[test]
    fn bad_listen_addresses() {
        use ListenAddressError::*;
        for (text, expected) in [
            ("", MissingPort),
            ("9789", MissingPort),
            ("localhost", MissingPort),
            ("localhost:", MissingPort),
            (":", MissingPort),
            ("[::1]", MissingPort),
            (":http", BadPort("http".into())),
            (":65536", BadPort("65536".into())),
            (":-1", BadPort("-1".into())),
            (":+80", BadPort("+80".into())),
            ("[::1]9789", BadPort("9789".into())),
            ("::1:9789", UnbracketedIpv6),
            ("[::1:9789", BadIpv6("::1:9789".into())),
            ("[127.0.0.1]:9789", BadIpv6("127.0.0.1".into())),
            ("256.0.0.1:9789", BadHost("256.0.0.1".into())),
            ("bad host:9789", BadHost("bad host".into())),
            ("-bad:9789", BadHost("-bad".into())),
            ("a..b:9789", BadHost("a..b".into())),
        ] {
            assert_eq!(text.parse::<ListenAddress>(), Err(expected), "{text:?}");
        }
    }

    #[tokio::test]
    async fn binds_loopback() {
        let listener = ListenAddress::from_str("127.0.0.1:0")
            .unwrap()
            .bind()
            .await
            .unwrap();
        let address = listener.local_addr().unwrap();
        assert_eq!(address.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_ne!(address.port(), 0);
    }

    #[tokio::test]
    async fn binds_all_interfaces() {
        let listener = ListenAddress::from_str(":0").unwrap().bind().await.unwrap();
        let address = listener.local_addr().unwrap();
        assert!(address.ip().is_unspecified(), "{address}");
        assert_ne!(address.port(), 0);
        // Reachable over IPv4 even when bound to [::].
        let port = address.port();
        tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn binds_a_host_name() {
        let listener = ListenAddress::from_str("localhost:0")
            .unwrap()
            .bind()
            .await
            .unwrap();
        assert!(listener.local_addr().unwrap().ip().is_loopback());
    }
}
