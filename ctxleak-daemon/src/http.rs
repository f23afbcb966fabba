//! What `ctxleak attach` serves on its listen address: Prometheus metrics at `/metrics`, and
//! the last census as JSON at `/api/groups` (what `ctxleak top` shows) and `/api/goroutines`,
//! and as a goroutine profile that `go tool pprof` reads at `/debug/pprof/goroutine`.

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
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

/// State shared by the session (which writes) and the HTTP handlers (which read).
#[derive(Default)]
pub struct Shared {
    pub metrics: Metrics,
    pub latest: RwLock<Option<Arc<Latest>>>,
}

impl Shared {
    pub fn publish(&self, latest: Latest) {
        if let Ok(mut slot) = self.latest.write() {
            *slot = Some(Arc::new(latest));
        }
    }

    fn latest(&self) -> Option<Arc<Latest>> {
        self.latest.read().ok().and_then(|slot| slot.clone())
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route(GROUPS_PATH, get(groups))
        .route("/api/goroutines", get(goroutines))
        .route(LEAKS_PATH, get(leaks))
        .route("/debug/pprof/goroutine", get(profile))
        .route(
            "/",
            get(|| async {
                "ctxleak: /metrics (Prometheus), /api/groups, /api/goroutines and /api/leaks \
                 (JSON), /debug/pprof/goroutine (go tool pprof)\n"
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

async fn groups(State(shared): State<Arc<Shared>>) -> Response {
    shared
        .latest()
        .map_or_else(not_yet, |latest| json(&latest.groups))
}

async fn profile(State(shared): State<Arc<Shared>>) -> Response {
    shared.latest().map_or_else(not_yet, |latest| {
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
    })
}

async fn goroutines(State(shared): State<Arc<Shared>>) -> Response {
    shared
        .latest()
        .map_or_else(not_yet, |latest| json(&latest.goroutines))
}

async fn leaks(State(shared): State<Arc<Shared>>) -> Response {
    shared
        .latest()
        .map_or_else(not_yet, |latest| json(&latest.leaks))
}
