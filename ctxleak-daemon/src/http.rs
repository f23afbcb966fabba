//! What `ctxleak attach` and `ctxleak daemon` serve on their listen address: Prometheus
//! metrics at `/metrics`, the watched processes at `/api/targets`, and each one's last census
//! as JSON at `/api/groups` (what `ctxleak top` shows), `/api/goroutines` and `/api/leaks`,
//! and as a goroutine profile that `go tool pprof` reads at `/debug/pprof/goroutine`. Those
//! take `?pid=N`, which may be left out while only one process is watched.
//!
//! Those four answer as of at most [`FRESH`] ago, like Go's own endpoint: when the last census
//! is older, the request asks the watcher for one and waits for it (one census serves every
//! request that waits meanwhile, so a census runs at most about once a [`FRESH`] per process
//! whatever the number of clients).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::{GROUPS_PATH, GroupsResponse, LEAKS_PATH, LeaksResponse};
use crate::groups::GoroutinesResponse;
use crate::metrics::Metrics;

/// The last census, as served.
pub struct Latest {
    pub groups: GroupsResponse,
    pub goroutines: GoroutinesResponse,
    /// Gzipped profile.proto, the shape of Go's `/debug/pprof/goroutine`.
    pub profile: Vec<u8>,
    pub leaks: LeaksResponse,
}

/// One watched process, as `/api/targets` lists it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TargetEntry {
    pub pid: u32,
    pub exe: String,
    pub go_version: String,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
}

/// How old a census `/api/*` and `/debug/pprof/goroutine` may serve.
pub const FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a request waits for the census it asked for before it serves the last one.
const CENSUS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// State shared by the sessions (which write) and the HTTP handlers (which read).
pub struct Shared {
    pub metrics: Metrics,
    targets: RwLock<BTreeMap<u32, TargetEntry>>,
    latest: RwLock<BTreeMap<u32, Arc<Latest>>>,
    /// Processes whose census a request wants now ([`Shared::take_wanted`]).
    wanted: std::sync::Mutex<std::collections::BTreeSet<u32>>,
    /// Wakes the watcher when `wanted` gained a process.
    pub census_wanted: tokio::sync::Notify,
    /// Bumped at every publish: waiting requests look again.
    published: tokio::sync::watch::Sender<u64>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            metrics: Metrics::default(),
            targets: RwLock::default(),
            latest: RwLock::default(),
            wanted: std::sync::Mutex::default(),
            census_wanted: tokio::sync::Notify::new(),
            published: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Shared {
    pub fn add_target(&self, entry: TargetEntry) {
        if let Ok(mut targets) = self.targets.write() {
            targets.insert(entry.pid, entry);
        }
    }

    /// Forgets everything of `pid`.
    pub fn remove_target(&self, pid: u32) {
        if let Ok(mut targets) = self.targets.write() {
            targets.remove(&pid);
        }
        if let Ok(mut latest) = self.latest.write() {
            latest.remove(&pid);
        }
        self.metrics.remove_target(pid);
    }

    pub fn publish(&self, pid: u32, latest: Latest) {
        if let Ok(mut slot) = self.latest.write() {
            slot.insert(pid, Arc::new(latest));
        }
        self.published
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// The processes whose census a request waits for, each once.
    pub fn take_wanted(&self) -> Vec<u32> {
        self.wanted
            .lock()
            .map(|mut wanted| std::mem::take(&mut *wanted).into_iter().collect())
            .unwrap_or_default()
    }

    /// The census of the process a request names, taken at most [`FRESH`] ago: the last one
    /// if it is that recent, or else one the watcher takes now (the last one after
    /// [`CENSUS_WAIT`], if none came).
    async fn fresh_for(&self, query: Option<&str>) -> Result<Arc<Latest>, Box<Response>> {
        let pid = self.pid_for(query)?;
        let requested = unix_ms();
        let fresh = |latest: &Latest| {
            requested.saturating_sub(latest.groups.taken_at_unix_ms) <= FRESH.as_millis() as u64
        };
        if let Some(latest) = self.latest(pid).filter(|latest| fresh(latest)) {
            return Ok(latest);
        }
        let mut published = self.published.subscribe();
        if let Ok(mut wanted) = self.wanted.lock() {
            wanted.insert(pid);
        }
        self.census_wanted.notify_one();
        let taken = async {
            loop {
                let current = self
                    .latest(pid)
                    .is_some_and(|latest| latest.groups.taken_at_unix_ms >= requested);
                if current || published.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(CENSUS_WAIT, taken).await;
        self.latest(pid).ok_or_else(|| Box::new(self.missing(pid)))
    }

    /// The last census of `pid`.
    pub fn latest(&self, pid: u32) -> Option<Arc<Latest>> {
        self.latest
            .read()
            .ok()
            .and_then(|latest| latest.get(&pid).cloned())
    }

    /// The process a request names (`?pid=N`), or the only one.
    fn pid_for(&self, query: Option<&str>) -> Result<u32, Box<Response>> {
        Ok(match query_pid(query) {
            Ok(Some(pid)) => pid,
            Ok(None) => {
                let targets = self
                    .targets
                    .read()
                    .map(|t| t.keys().copied().collect::<Vec<_>>());
                match targets.as_deref() {
                    Ok([pid]) => *pid,
                    Ok([]) => return Err(Box::new(not_yet())),
                    Ok(pids) => {
                        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
                        return Err(Box::new(
                            (
                            StatusCode::BAD_REQUEST,
                            format!(
                                "several processes are watched: add ?pid=N, N one of {} (see /api/targets)\n",
                                pids.join(", ")
                            ),
                        )
                            .into_response(),
                        ));
                    }
                    Err(_) => return Err(Box::new(not_yet())),
                }
            }
            Err(response) => return Err(response),
        })
    }

    /// Why there is no census of `pid`.
    fn missing(&self, pid: u32) -> Response {
        let watched = self
            .targets
            .read()
            .is_ok_and(|targets| targets.contains_key(&pid));
        if watched {
            not_yet()
        } else {
            (
                StatusCode::NOT_FOUND,
                format!("PID {pid} is not watched (see /api/targets)\n"),
            )
                .into_response()
        }
    }
}

/// `pid=N` in a query string; Ok(None) when absent.
fn query_pid(query: Option<&str>) -> Result<Option<u32>, Box<Response>> {
    let Some(value) = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("pid="))
    else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|_| {
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                format!("pid={value} is not a PID\n"),
            )
                .into_response(),
        )
    })
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/targets", get(targets))
        .route(GROUPS_PATH, get(groups))
        .route("/api/goroutines", get(goroutines))
        .route(LEAKS_PATH, get(leaks))
        .route("/debug/pprof/goroutine", get(profile))
        .route(
            "/",
            get(|| async {
                "ctxleak: /metrics (Prometheus), /api/targets, /api/groups, /api/goroutines and \
                 /api/leaks (JSON; ?pid=N), /debug/pprof/goroutine (go tool pprof; ?pid=N)\n"
            }),
        )
        .with_state(shared);
    axum::serve(listener, app).await
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match shared.metrics.encode() {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode JSON\n").into_response(),
    }
}

fn not_yet() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "no census yet: the first one runs right after attaching\n",
    )
        .into_response()
}

async fn targets(State(shared): State<Arc<Shared>>) -> Response {
    let targets: Vec<TargetEntry> = shared
        .targets
        .read()
        .map(|targets| targets.values().cloned().collect())
        .unwrap_or_default();
    json(&targets)
}

/// Milliseconds since the Unix epoch, as censuses are stamped.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn groups(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    shared
        .fresh_for(query.as_deref())
        .await
        .map_or_else(|r| *r, |latest| json(&latest.groups))
}

async fn profile(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    shared.fresh_for(query.as_deref()).await.map_or_else(
        |r| *r,
        |latest| {
            let disposition = "attachment; filename=\"goroutine.pb.gz\"";
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/octet-stream"),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                latest.profile.clone(),
            )
                .into_response()
        },
    )
}

async fn goroutines(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    shared
        .fresh_for(query.as_deref())
        .await
        .map_or_else(|r| *r, |latest| json(&latest.goroutines))
}

async fn leaks(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    shared
        .fresh_for(query.as_deref())
        .await
        .map_or_else(|r| *r, |latest| json(&latest.leaks))
}
