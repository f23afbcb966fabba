//! The TOML config file of `ctxleak daemon` (`--config FILE`), and the listen address and log
//! format types of `--web.listen-address` and `--log.format`.
//!
//! The file is more flags: its keys are the daemon's long flags without their `--`, read
//! into the same structs as the flags ([`crate::options`]) by the same parsers, and the flags
//! given on the command line are laid over it ([`merge`]) before the defaults apply. A dotted
//! flag is a key in a table (`--web.listen-address` is `listen-address` in `[web]`). Unknown
//! keys are errors, so a misspelt key cannot silently keep a default; every error is one line
//! that names the file and the key (or the line, for TOML syntax).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::{Args as _, FromArgMatches as _};
use serde::Deserialize as _;
use toml::de::{DeTable, DeValue, Deserializer};

use crate::options::{DaemonFlags, DiscoveryFlags, WatchFlags};

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
    #[error("cannot read the config file {}", path.display())]
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
        key: String,
        reason: String,
    },
}

/// Reads and checks the config file at `path`.
pub fn load(path: &Path) -> Result<DaemonFlags, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_str(&text, path)
}

/// Parses and checks the text of a config file; `path` is only for error messages. What the
/// file leaves out is `None` (or empty), for the flags and then the defaults to fill.
pub fn parse_str(text: &str, path: &Path) -> Result<DaemonFlags, ConfigError> {
    let syntax = |error: toml::de::Error| ConfigError::Syntax {
        path: path.to_owned(),
        line: line_at(text, error.span().map_or(0, |span| span.start)),
        message: error.message().trim().replace('\n', "; "),
    };
    let document = DeTable::parse(text).map_err(syntax)?;
    if let Some((key, hint)) = unknown_key(document.get_ref(), &keys()) {
        return Err(ConfigError::UnknownKey {
            path: path.to_owned(),
            key,
            hint,
        });
    }
    let values = value_spans(document.get_ref(), "");
    // A value error names its key, as a bad flag names the flag.
    let invalid = |error: toml::de::Error| match error.span().and_then(|span| {
        values
            .iter()
            .rev()
            .find(|(_, value)| value.start <= span.start && span.end <= value.end)
    }) {
        Some((key, _)) => ConfigError::Invalid {
            path: path.to_owned(),
            key: key.clone(),
            reason: error.message().trim().replace('\n', "; "),
        },
        None => syntax(error),
    };
    // The watch options and the daemon's own are two structs (serde cannot deny unknown
    // fields through a flattened one): each gets its keys.
    let watch_keys = long_flags(WatchFlags::augment_args(clap::Command::new("watch")));
    let span = document.span();
    let (mut watch, mut discovery) = (DeTable::new(), DeTable::new());
    for (key, value) in document.into_inner() {
        let part = if watch_keys.iter().any(|known| **key.get_ref() == **known) {
            &mut watch
        } else {
            &mut discovery
        };
        part.insert(key, value);
    }
    let part = |table| Deserializer::from(toml::Spanned::new(span.clone(), table));
    Ok(DaemonFlags {
        watch: WatchFlags::deserialize(part(watch)).map_err(invalid)?,
        discovery: DiscoveryFlags::deserialize(part(discovery)).map_err(invalid)?,
    })
}

/// `ctxleak daemon`'s options: `file`'s, with the flags given on the command line
/// (`matches`) over them.
pub fn merge(
    mut file: DaemonFlags,
    matches: &clap::ArgMatches,
) -> Result<DaemonFlags, clap::Error> {
    file.update_from_arg_matches(matches)?;
    Ok(file)
}

/// Every key the file accepts, a key in a table written `table.key`: `ctxleak daemon`'s long
/// flags.
pub fn keys() -> Vec<String> {
    long_flags(DaemonFlags::augment_args(clap::Command::new("daemon")))
}

fn long_flags(command: clap::Command) -> Vec<String> {
    command
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .map(str::to_owned)
        .collect()
}

/// The line of `text` that byte `offset` is on, from 1.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Each key's value and where it is in the text, tables before the keys in them (dotted).
fn value_spans(table: &DeTable<'_>, prefix: &str) -> Vec<(String, Range<usize>)> {
    let mut spans = Vec::new();
    for (key, value) in table.iter() {
        let key = format!("{prefix}{}", key.get_ref());
        spans.push((key.clone(), value.span()));
        if let DeValue::Table(inner) = value.get_ref() {
            spans.extend(value_spans(inner, &format!("{key}.")));
        }
    }
    spans
}

/// The first key of `table` not in `keys`, dotted if it is in a table, with a hint.
fn unknown_key(table: &DeTable<'_>, keys: &[String]) -> Option<(String, String)> {
    let is_table_name = |name: &str| {
        keys.iter()
            .any(|key| key.split_once('.').is_some_and(|(t, _)| t == name))
    };
    let known = |name: &str| keys.iter().any(|key| key == name);
    for (key, value) in table.iter() {
        let key: &str = key.get_ref();
        match value.get_ref() {
            DeValue::Table(inner) if is_table_name(key) => {
                for (inner_key, _) in inner.iter() {
                    let dotted = format!("{key}.{}", inner_key.get_ref());
                    if !known(&dotted) {
                        return Some((dotted, default_hint()));
                    }
                }
            }
            // A table's name with a value that is not a table: serde names the wrong type.
            _ if known(key) || is_table_name(key) => {}
            _ => {
                let hint = keys
                    .iter()
                    .find_map(|known| {
                        let (table, name) = known.split_once('.')?;
                        (name == key).then(|| format!("it goes in the table [{table}]"))
                    })
                    .unwrap_or_else(default_hint);
                return Some((key.to_owned(), hint));
            }
        }
    }
    None
}

fn default_hint() -> String {
    "the keys are the daemon's long flags: see ctxleak daemon --help".to_owned()
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
    use std::time::Duration;

    use super::*;
    use crate::options::{CENSUS_INTERVAL, LogFlags, RESCAN_INTERVAL, WebFlags};

    fn parse(text: &str) -> Result<DaemonFlags, ConfigError> {
        parse_str(text, Path::new("/etc/ctxleak/ctxleak.toml"))
    }

    /// A value for `key` (as [`keys`] writes it): as TOML, and as the flag's arguments.
    fn sample(key: &str) -> (&'static str, &'static [&'static str]) {
        match key {
            "ring-buffer-size" => ("65536", &["65536"]),
            "park-times" | "no-contexts" | "cancel-probe" | "probe-stats" => ("true", &[]),
            "exe" | "process-name" | "cgroup" => (r#"["/usr/bin/*"]"#, &["/usr/bin/*"]),
            "web.listen-address" => (r#"":9789""#, &[":9789"]),
            "log.format" => (r#""json""#, &["json"]),
            "max-overhead" => (r#""2.5%""#, &["2.5%"]),
            "suspect-min-growth" | "suspect-min-growth-percent" => ("7", &["7"]),
            _ => (r#""7s""#, &["7s"]),
        }
    }

    /// `key = value` in TOML, in its table if it is dotted.
    fn toml_line(key: &str) -> String {
        let value = sample(key).0;
        match key.split_once('.') {
            Some((table, name)) => format!("[{table}]\n{name} = {value}\n"),
            None => format!("{key} = {value}\n"),
        }
    }

    /// `ctxleak daemon`'s flags, as `args` give them (without `--config`).
    fn flags(args: &[String]) -> DaemonFlags {
        let command = DaemonFlags::augment_args(clap::Command::new("daemon"));
        let matches = command
            .try_get_matches_from(std::iter::once("daemon".to_owned()).chain(args.iter().cloned()))
            .unwrap_or_else(|error| panic!("{args:?}: {error}"));
        merge(DaemonFlags::default(), &matches).unwrap()
    }

    /// Each key is a flag and each flag a key, and they set the same option: a field that is
    /// only one of them (`#[serde(skip)]`, or a flag left out of the structs) fails here.
    #[test]
    fn every_flag_is_a_key_that_sets_the_same() {
        let keys = keys();
        assert_eq!(keys.len(), 20, "{keys:?}");
        for key in &keys {
            let file = parse(&toml_line(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_ne!(file, DaemonFlags::default(), "{key} set nothing");
            let args: Vec<String> = std::iter::once(format!("--{key}"))
                .chain(sample(key).1.iter().map(|arg| (*arg).to_owned()))
                .collect();
            assert_eq!(flags(&args), file, "--{key} and the key {key}");
        }
    }

    #[test]
    fn all_keys_set_every_field() {
        // Top-level keys first, then the tables.
        let mut keys = keys();
        keys.sort_by_key(|key| key.contains('.'));
        let text: String = keys.iter().map(|key| toml_line(key)).collect();
        let config = parse(&text).unwrap();
        let seven = Some(Duration::from_secs(7));
        assert_eq!(
            config,
            DaemonFlags {
                watch: WatchFlags {
                    census_interval: seven,
                    suspect_window_short: seven,
                    suspect_window_long: seven,
                    suspect_min_age: seven,
                    suspect_min_growth: Some(7),
                    suspect_min_growth_percent: Some(7.0),
                    stuck_after: seven,
                    context_grace: seven,
                    ring_buffer_size: Some(65536),
                    park_times: Some(true),
                    no_contexts: Some(true),
                    cancel_probe: Some(true),
                    probe_stats: Some(true),
                    max_overhead: Some(crate::budget::ProbePolicy::Budget { share: 0.025 }),
                },
                discovery: DiscoveryFlags {
                    exe: vec!["/usr/bin/*".into()],
                    process_name: vec!["/usr/bin/*".into()],
                    cgroup: vec!["/usr/bin/*".into()],
                    rescan_interval: seven,
                    web: WebFlags {
                        listen_address: Some(ListenAddress::AllInterfaces { port: 9789 }),
                    },
                    log: LogFlags {
                        format: Some(LogFormat::Json),
                    },
                },
            }
        );
    }

    /// Flags override the file; what they leave out keeps the file's value.
    #[test]
    fn flags_override_the_file() {
        let file = parse(
            "exe = [\"/old/*\"]\ncensus-interval = \"9s\"\npark-times = true\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        let command = DaemonFlags::augment_args(clap::Command::new("daemon"));
        let matches = command
            .try_get_matches_from(["daemon", "--exe", "/new/*", "--context-grace", "1s"])
            .unwrap();
        let merged = merge(file, &matches).unwrap();
        assert_eq!(merged.discovery.exe, ["/new/*"]);
        assert_eq!(merged.watch.census_interval, Some(Duration::from_secs(9)));
        assert_eq!(merged.watch.context_grace, Some(Duration::from_secs(1)));
        assert_eq!(merged.watch.park_times, Some(true));
        assert_eq!(merged.discovery.log.format, Some(LogFormat::Json));
    }

    #[test]
    fn empty_file_sets_nothing() {
        assert_eq!(parse("").unwrap(), DaemonFlags::default());
        assert_eq!(parse("# only a comment\n").unwrap(), DaemonFlags::default());
    }

    #[test]
    fn values() {
        let config = parse(
            "census-interval = \"500ms\"\nsuspect-window-long = \"1h 30m\"\n\
             exe = [\"/usr/local/bin/*\", \"/opt/**\"]\n[log]\nformat = \"text\"\n\
             [web]\nlisten-address = \"[::1]:9789\"\n",
        )
        .unwrap();
        assert_eq!(
            config.watch.census_interval,
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            config.watch.suspect_window_long,
            Some(Duration::from_secs(5400))
        );
        assert_eq!(config.discovery.exe, ["/usr/local/bin/*", "/opt/**"]);
        assert_eq!(config.discovery.log.format, Some(LogFormat::Text));
        assert_eq!(
            config.discovery.web.listen_address,
            Some(ListenAddress::Socket("[::1]:9789".parse().unwrap()))
        );
        // A dotted key is the same as the table.
        let config = parse("web.listen-address = \"localhost:9789\"\n").unwrap();
        assert_eq!(config.discovery.web.listen().to_string(), "localhost:9789");
    }

    #[test]
    fn shortest_periods_are_accepted() {
        let config = parse("census-interval = \"100ms\"\nrescan-interval = \"1s\"\n").unwrap();
        assert_eq!(config.watch.census_interval, Some(CENSUS_INTERVAL.min));
        assert_eq!(config.discovery.rescan_interval, Some(RESCAN_INTERVAL.min));
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
            (
                "suspect-min-growth = -1\n",
                "suspect-min-growth: -1 is not a number of goroutines",
            ),
            ("exe = [\"/usr/[bin\"]\n", "exe: bad glob \"/usr/[bin\""),
            ("cgroup = [\"{a\"]\n", "cgroup: bad glob"),
            (
                "[web]\nlisten-address = \"9789\"\n",
                "web.listen-address: \"9789\": missing port",
            ),
            (
                "[log]\nformat = \"xml\"\n",
                "log.format: \"xml\" is none of \"text\", \"json\"",
            ),
            // A value of the wrong type names its key too.
            (
                "park-times = true\ncensus-interval = true\n",
                "census-interval: invalid type: boolean `true`",
            ),
            ("park-times = \"yes\"\n", "park-times: invalid type"),
            ("exe = \"/usr/bin/*\"\n", "exe: invalid type"),
            ("web = 1\n", "web: invalid type"),
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
    fn syntax_errors_give_a_line() {
        for (text, line) in [
            ("\n\ncensus-interval = \n", 3),
            ("park-times = true\n[web\n", 2),
            ("exe = [\"a\",\n", 1),
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
        let error = load(Path::new("/x.toml")).unwrap_err();
        assert_eq!(
            crate::error_line::ErrorLine(&error).to_string(),
            "cannot read the config file /x.toml: No such file or directory (os error 2)"
        );
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
