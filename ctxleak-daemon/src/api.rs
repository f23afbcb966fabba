//! The JSON API that `ctxleak attach` serves next to its metrics, and that `ctxleak top` (and any
//! other tool) reads. These types are the contract: the server serializes them, clients
//! deserialize them, so a change here is a change for both.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where [`GroupsResponse`] is served, relative to the metrics address.
pub const GROUPS_PATH: &str = "/api/groups";

/// GET /api/groups
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupsResponse {
    pub pid: u32,
    pub exe: String,
    pub go_version: String,
    /// When the census was taken (Unix milliseconds).
    pub taken_at_unix_ms: u64,
    /// All live user goroutines (what runtime.NumGoroutine() says) and runtime ones.
    pub goroutines_user: u64,
    pub goroutines_system: u64,
    /// Sorted: suspects first by rank, then by count descending.
    pub groups: Vec<Group>,
}

/// Goroutines created by the same `go` statement and blocked at the same place for the same
/// reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Stable across censuses for the same (created_by, blocked_at, wait_reason).
    pub id: String,
    pub count: u64,
    /// "waiting", "runnable", "running", "syscall", ...
    pub state: String,
    /// The runtime's own wait reason string ("chan receive", "select", "sync.Mutex.Lock", ...);
    /// empty unless waiting.
    pub wait_reason: String,
    /// The `go` statement that created these goroutines.
    pub created_by: Option<SourceLocation>,
    /// Where they are blocked: the first frame outside the runtime in their stack.
    pub blocked_at: Option<SourceLocation>,
    /// Seconds the oldest member has been in this group (blocked at the same place).
    pub oldest_age_s: f64,
    /// Net change in count over the short and the long window (goroutines), and the windows'
    /// lengths in seconds.
    pub growth_short: i64,
    pub growth_long: i64,
    pub window_short_s: u64,
    pub window_long_s: u64,
    /// Leak suspect: keeps growing and its oldest member is older than the threshold.
    pub suspect: bool,
    /// 1 = most suspicious; 0 for non-suspects.
    pub rank: u32,
    /// One member's stack, innermost first.
    pub stack: Vec<SourceLocation>,
}

/// A place in the target's source code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceLocation {
    pub function: String,
    pub file: String,
    pub line: u32,
}

impl fmt::Display for SourceLocation {
    /// `function (file:line)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.function, self.file, self.line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_location_display() {
        let location = SourceLocation {
            function: "main.worker".into(),
            file: "/src/app/main.go".into(),
            line: 42,
        };
        assert_eq!(location.to_string(), "main.worker (/src/app/main.go:42)");
    }

    #[test]
    fn round_trip() {
        let response = GroupsResponse {
            pid: 1,
            exe: "/bin/app".into(),
            go_version: "go1.25.5".into(),
            taken_at_unix_ms: 1_700_000_000_000,
            goroutines_user: 3,
            goroutines_system: 4,
            groups: vec![Group {
                id: "g1".into(),
                count: 3,
                state: "waiting".into(),
                wait_reason: "chan receive".into(),
                created_by: None,
                blocked_at: Some(SourceLocation {
                    function: "main.f".into(),
                    file: "main.go".into(),
                    line: 7,
                }),
                oldest_age_s: 1.5,
                growth_short: -1,
                growth_long: 2,
                window_short_s: 60,
                window_long_s: 900,
                suspect: false,
                rank: 0,
                stack: vec![],
            }],
        };
        let json = serde_json::to_string(&response).unwrap();
        assert!(json.contains(r#""created_by":null"#), "{json}");
        let back: GroupsResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(back, response);
    }
}
