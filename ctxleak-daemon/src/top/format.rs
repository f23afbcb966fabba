//! The text `ctxleak top` shows: counts, ages, durations and locations fitted to a column,
//! in one place for the table, the header and the detail pane.

use std::time::Duration;

use ratatui::text::{Line, Span};
use unicode_width::{UnicodeWidthChar as _, UnicodeWidthStr as _};

use crate::api::{Group, SourceLocation};

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub(super) fn state_text(group: &Group) -> &str {
    if group.wait_reason.is_empty() {
        &group.state
    } else {
        &group.wait_reason
    }
}

/// A location for a table cell of `width` columns: the function without its import path, then
/// the file's base name and line when they fit too, e.g. `server.(*Conn).serve conn.go:88`. The
/// function says more at a glance; the detail pane has the rest.
pub(super) fn location_cell(location: Option<&SourceLocation>, width: usize) -> String {
    let Some(location) = location else {
        return "-".to_owned();
    };
    let function = short_function(&location.function);
    let file = location.file.rsplit('/').next().unwrap_or(&location.file);
    let full = format!("{function} {file}:{}", location.line);
    if full.width() <= width {
        full
    } else {
        truncate(function, width)
    }
}

/// `github.com/acme/api/server.(*Conn).serve` -> `server.(*Conn).serve`: the import path's last
/// element stays. Slashes inside a receiver or type parameters (`pkg.F[go.shape.*a/b.T]`) are not
/// part of the path.
pub fn short_function(function: &str) -> &str {
    let name_start = function.find(['(', '[']).unwrap_or(function.len());
    let start = function[..name_start]
        .rfind('/')
        .map_or(0, |slash| slash + 1);
    &function[start..]
}

/// Shortens `text` to at most `width` columns, ending with `…` when something was cut.
pub fn truncate(text: &str, width: usize) -> String {
    if text.width() <= width {
        text.to_owned()
    } else {
        cut(text, width)
    }
}

/// Shortens `text` to at most `width` columns by cutting its start: `…` then its end.
pub fn truncate_left(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut tail = Vec::new();
    let mut used = 0;
    for c in text.chars().rev() {
        let w = c.width().unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        tail.push(c);
        used += w;
    }
    std::iter::once('…').chain(tail.into_iter().rev()).collect()
}

/// The start of `text` that fits in `width - 1` columns, then `…` (nothing if `width` is 0).
pub(super) fn cut(text: &str, width: usize) -> String {
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// 45s, 12m, 3h, 2d: the largest whole unit.
pub fn human_age(seconds: f64) -> String {
    let s = if seconds.is_finite() && seconds > 0.0 {
        seconds as u64
    } else {
        0
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// 500ms, 1.5s, 90s, 15m, 1h, 1d: for intervals and windows, in the largest exact unit.
pub fn human_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if !ms.is_multiple_of(1000) {
        return format!("{:.1}s", duration.as_secs_f64());
    }
    let s = duration.as_secs();
    if s.is_multiple_of(86400) {
        format!("{}d", s / 86400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

pub(super) fn signed(n: i64) -> String {
    if n > 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

/// Signed, at most 5 columns: +999, +1.2k, +12k, +1.2M.
pub(super) fn signed_compact(n: i64) -> String {
    let magnitude = compact(n.unsigned_abs(), 1000);
    match n.signum() {
        1 => format!("+{magnitude}"),
        -1 => format!("-{magnitude}"),
        _ => "0".to_owned(),
    }
}

/// Exact up to 999999, then 1.2M.
pub(super) fn compact_count(n: u64) -> String {
    compact(n, 1_000_000)
}

pub(super) fn compact(n: u64, exact_below: u64) -> String {
    if n < exact_below {
        return n.to_string();
    }
    let (value, unit) = if n < 1_000_000 {
        (n as f64 / 1e3, "k")
    } else if n < 1_000_000_000 {
        (n as f64 / 1e6, "M")
    } else {
        (n as f64 / 1e9, "G")
    };
    if value < 9.95 {
        format!("{value:.1}{unit}")
    } else {
        format!("{value:.0}{unit}")
    }
}

/// `HH:MM:SS UTC` of a Unix time in milliseconds.
pub fn utc_time_of_day(unix_ms: u64) -> String {
    let s = (unix_ms / 1000) % 86400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

/// The probes under `--max-overhead`, for the header: nothing when they are always on.
pub(super) fn probes_text(probes: &crate::api::ProbeState) -> String {
    match probes.max_overhead.as_str() {
        "" | "exact" => String::new(),
        "0%" => " │ memory only".to_owned(),
        budget => format!(
            " │ probes {} {:.0}% of 1m (≤{budget})",
            if probes.on { "on," } else { "off," },
            probes.duty * 100.0
        ),
    }
}

/// The spans, cut to `width` columns with a `…` where the cut is.
pub(super) fn fit_spans(spans: Vec<Span<'static>>, width: usize) -> Line<'static> {
    let mut out = Vec::new();
    let mut used = 0;
    let total: usize = spans.iter().map(Span::width).sum();
    if total <= width {
        return Line::from(spans);
    }
    for span in spans {
        let w = span.width();
        if used + w < width {
            used += w;
            out.push(span);
        } else {
            // Something is cut here: this span, or (when it fills the rest exactly) the ones
            // after it. Either way the line ends with `…`.
            let room = width - used;
            if room > 0 {
                out.push(Span::styled(cut(&span.content, room), span.style));
            }
            break;
        }
    }
    Line::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human_age(0.4), "0s");
        assert_eq!(human_age(45.9), "45s");
        assert_eq!(human_age(12.0 * 60.0 + 5.0), "12m");
        assert_eq!(human_age(3.0 * 3600.0 + 59.0), "3h");
        assert_eq!(human_age(2.0 * 86400.0), "2d");
        assert_eq!(human_age(f64::NAN), "0s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human_duration(Duration::from_secs(1)), "1s");
        assert_eq!(human_duration(Duration::from_secs(90)), "90s");
        assert_eq!(human_duration(Duration::from_secs(60)), "1m");
        assert_eq!(human_duration(Duration::from_secs(900)), "15m");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(human_duration(Duration::from_secs(86400)), "1d");
        assert_eq!(signed_compact(0), "0");
        assert_eq!(signed_compact(999), "+999");
        assert_eq!(signed_compact(-1234), "-1.2k");
        assert_eq!(signed_compact(12_345), "+12k");
        assert_eq!(signed_compact(1_234_567), "+1.2M");
        assert_eq!(compact_count(999_999), "999999");
        assert_eq!(compact_count(1_500_000), "1.5M");
        assert_eq!(utc_time_of_day(1_700_000_000_123), "22:13:20 UTC");
    }

    #[test]
    fn truncates() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abcdef", 1), "…");
        assert_eq!(truncate("abcdef", 0), "");
        assert_eq!(truncate_left("abcdef", 4), "…def");
        assert_eq!(truncate_left("abcdef", 6), "abcdef");
        assert_eq!(
            short_function("github.com/acme/api/server.(*Conn).serve"),
            "server.(*Conn).serve"
        );
        assert_eq!(short_function("main.main.func1"), "main.main.func1");
        assert_eq!(short_function("example.com/a.b/c.F"), "c.F");
        assert_eq!(
            short_function("example.com/a.Map[go.shape.*x/y.T]"),
            "a.Map[go.shape.*x/y.T]"
        );
        let line = fit_spans(vec![Span::raw("abc"), Span::raw("defgh")], 5);
        assert_eq!(line.to_string(), "abcd…");
        let location = SourceLocation {
            function: "github.com/acme/api/server.(*Conn).serve".into(),
            file: "/src/api/server/conn.go".into(),
            line: 88,
        };
        assert_eq!(
            location_cell(Some(&location), 40),
            "server.(*Conn).serve conn.go:88"
        );
        assert_eq!(location_cell(Some(&location), 30), "server.(*Conn).serve");
        assert_eq!(location_cell(Some(&location), 10), "server.(*…");
        assert_eq!(location_cell(None, 10), "-");
    }
}
