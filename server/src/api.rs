//! The HTTP API: routes, request parsing, the bearer-token gates on reads and on the admin
//! endpoints, and the one error type (`ApiError`) that turns every failure into a status code and
//! a JSON `{error, reason_code}`. Handlers decide nothing themselves: `shoal_fleet`'s `ingest` and
//! `keys` decide and its `tally` counts; `store` records (through the one writer).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use shoal_proto::{KeyId, Report, Status, MAX_ENVELOPE_BYTES};

use shoal_fleet::ingest::{Enrollment, Rejection};
use shoal_fleet::keys::{KeyChange, KeyRefusal};
use shoal_fleet::record::{DeviceRecord, HistoryEntry};
use shoal_fleet::rollout::HaltRefusal;
use shoal_fleet::tally::Summary;

use crate::store::{
    Accepted, HaltChanged, HaltError, IngestError, KeyChangeError, KeyChanged, StoreError,
};
use crate::AppState;

/// Header carrying an enrollment token on a device's first report.
pub const ENROLL_HEADER: &str = "x-shoal-enroll";

/// Default and largest page size of `GET /api/v1/devices`.
pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;
/// Rows of one page of the HTML device list (`/devices`).
pub const PAGE_ROWS: usize = 500;
/// Largest body of an admin request (`{"key": "ed25519:..."}` is about 60 bytes).
pub const MAX_ADMIN_BODY: usize = 4096;

/// Every way a request can fail. Report rejections are 4xx; only a failing store gives a 5xx.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("missing or wrong bearer token: send `Authorization: Bearer TOKEN` with a token from the collector's --token-file")]
    Unauthorized,
    #[error("missing admin token: send `Authorization: Bearer TOKEN` with a token from the collector's --admin-token-file")]
    AdminUnauthorized,
    #[error("the bearer token is not an admin token: admin endpoints take only tokens from the collector's --admin-token-file (read tokens do not grant admin)")]
    AdminForbidden,
    #[error("admin endpoints are off: start the collector with --admin-token-file to unpin or re-key devices while it runs (or stop it and use `shoal-collector register`)")]
    AdminDisabled,
    #[error("bad request: {reason}")]
    BadRequest { reason: String },
    #[error("bad key: {reason}; give `ed25519:BASE64` or the `ssh-ed25519 AAAA...` line that `shoal-agent keygen` prints")]
    BadKey { reason: String },
    #[error(transparent)]
    KeyRefused(#[from] KeyRefusal),
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("bad query: {reason}")]
    BadQuery { reason: String },
    #[error("{0}; send the headers X-Shoal-Key, X-Shoal-Time and X-Shoal-Signature as `shoal-agent doctor` does")]
    BadProof(#[from] shoal_proto::ProofError),
    #[error("missing header {header}: the enrollment check takes a proof of the device key (X-Shoal-Key, X-Shoal-Time, X-Shoal-Signature), as `shoal-agent doctor` sends it")]
    MissingProof { header: &'static str },
    #[error("the store is unavailable: {reason}")]
    Unavailable { reason: String },
    #[error("{input:?} is not a commit id: give the full 40 (SHA-1) or 64 (SHA-256) hexadecimal digits, as `git rev-parse COMMIT` prints them")]
    BadCommit { input: String },
    #[error(transparent)]
    HaltRefused(#[from] HaltRefusal),
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
    reason_code: &'static str,
    /// On `replayed_sequence`: the last sequence the collector holds for the device (an agent can
    /// treat its report as already delivered).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_sequence: Option<u64>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Rejected(r) => match r {
                Rejection::OversizedBody { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                Rejection::MalformedEnvelope { .. }
                | Rejection::UnsupportedVersion { .. }
                | Rejection::MalformedReport { .. } => StatusCode::BAD_REQUEST,
                Rejection::InvalidReport { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                Rejection::BadSignature { .. } => StatusCode::UNAUTHORIZED,
                Rejection::UnknownKey { .. }
                | Rejection::BadEnrollmentToken { .. }
                | Rejection::KeyMismatch { .. } => StatusCode::FORBIDDEN,
                Rejection::ReplayedSequence { .. } => StatusCode::CONFLICT,
            },
            ApiError::Unauthorized | ApiError::AdminUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::AdminForbidden | ApiError::AdminDisabled => StatusCode::FORBIDDEN,
            ApiError::BadRequest { .. } | ApiError::BadKey { .. } => StatusCode::BAD_REQUEST,
            ApiError::KeyRefused(KeyRefusal::UnknownDevice { .. }) => StatusCode::NOT_FOUND,
            ApiError::KeyRefused(KeyRefusal::KeyInUse { .. }) => StatusCode::CONFLICT,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::BadQuery { .. } => StatusCode::BAD_REQUEST,
            ApiError::BadProof(_) | ApiError::MissingProof { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadCommit { .. } => StatusCode::BAD_REQUEST,
            ApiError::HaltRefused(HaltRefusal::ReasonTooLong { .. }) => StatusCode::BAD_REQUEST,
            ApiError::HaltRefused(HaltRefusal::TooMany) => StatusCode::CONFLICT,
        }
    }

    pub fn reason_code(&self) -> &'static str {
        match self {
            ApiError::Rejected(r) => r.reason_code(),
            ApiError::Unauthorized | ApiError::AdminUnauthorized => "unauthorized",
            ApiError::AdminForbidden => "forbidden",
            ApiError::AdminDisabled => "admin_disabled",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::BadKey { .. } => "bad_key",
            ApiError::KeyRefused(r) => r.reason_code(),
            ApiError::NotFound { .. } => "not_found",
            ApiError::BadQuery { .. } => "bad_query",
            ApiError::BadProof(_) | ApiError::MissingProof { .. } => "bad_proof",
            ApiError::Unavailable { .. } => "store_unavailable",
            ApiError::BadCommit { .. } => "bad_commit",
            ApiError::HaltRefused(HaltRefusal::ReasonTooLong { .. }) => "reason_too_long",
            ApiError::HaltRefused(HaltRefusal::TooMany) => "too_many_halts",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::Unavailable {
            reason: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request refused");
        }
        let body = ErrorBody {
            error: self.to_string(),
            reason_code: self.reason_code(),
            last_sequence: match &self {
                ApiError::Rejected(Rejection::ReplayedSequence { last, .. }) => Some(*last),
                _ => None,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was not read: do not try to reuse the connection.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if matches!(self, ApiError::Unauthorized | ApiError::AdminUnauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The collector's whole HTTP API.
pub fn app(state: Arc<AppState>) -> Router {
    let reads = Router::new()
        .route("/", get(summary_page))
        .route("/devices", get(devices_page))
        .route("/devices/{id}", get(device_page))
        .route("/api/v1/devices", get(list_devices))
        .route("/api/v1/devices/{id}", get(one_device))
        .route("/api/v1/devices/{id}/history", get(device_history))
        .route("/api/v1/summary", get(summary))
        .route("/api/v1/rollouts", get(crate::page_rollouts::list_rollouts))
        .route(
            "/api/v1/rollouts/{commit}",
            get(crate::page_rollouts::one_rollout),
        )
        .route("/rollouts", get(crate::page_rollouts::rollouts_page))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_bearer,
        ));
    let admin = Router::new()
        .route(
            "/api/v1/devices/{id}/key",
            put(put_device_key).delete(delete_device_key),
        )
        .route("/api/v1/rollouts/{commit}/halt", post(halt_rollout))
        .route("/api/v1/rollouts/{commit}/resume", post(resume_rollout))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .route("/api/v1/reports", post(post_report))
        .route("/api/v1/devices/{id}/enrollment", get(enrollment))
        .route("/api/v1/collector", get(collector_info))
        .route("/healthz", get(healthz))
        .merge(reads)
        .merge(admin)
        .fallback(|| async {
            ApiError::NotFound {
                what: "route".to_owned(),
            }
        })
        .with_state(state)
}

async fn require_bearer(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(tokens) = &app.config.read_tokens {
        let bearer = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| crate::auth::bearer(v.as_bytes()));
        // An admin token may read too: whoever may re-key devices may see them.
        let admin = app.config.admin_tokens.as_ref();
        let ok = bearer.is_some_and(|t| tokens.accepts(t) || admin.is_some_and(|a| a.accepts(t)));
        if !ok {
            app.metrics.unauthorized();
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// The admin gate: only a token from `--admin-token-file`; none configured means no admin at all
/// (the endpoints write, so unlike reads they are never open).
async fn require_admin(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| crate::auth::bearer(v.as_bytes()));
    let refusal = match (&app.config.admin_tokens, bearer) {
        (None, _) => Some(ApiError::AdminDisabled),
        (Some(_), None) => Some(ApiError::AdminUnauthorized),
        (Some(tokens), Some(t)) if !tokens.accepts(t) => Some(ApiError::AdminForbidden),
        (Some(_), Some(_)) => None,
    };
    if let Some(e) = refusal {
        app.metrics.admin_unauthorized();
        // Never the token itself: only that one was refused, where and why.
        tracing::warn!(
            method = %request.method(),
            path = %request.uri().path(),
            reason = e.reason_code(),
            "admin request refused"
        );
        return Err(e);
    }
    Ok(next.run(request).await)
}

async fn healthz(State(app): State<Arc<AppState>>) -> Result<&'static str, ApiError> {
    if app.store.healthy() {
        Ok("ok\n")
    } else {
        Err(ApiError::Unavailable {
            reason: "store does not answer reads".to_owned(),
        })
    }
}

/// The answer to `GET /api/v1/devices/{id}/enrollment`.
#[derive(Serialize)]
struct EnrollmentAnswer {
    device_id: String,
    /// The key that proved itself.
    key: String,
    /// Whether that key is the one pinned to the device id.
    enrolled: bool,
    /// `this_key`, `other_key` (the id is pinned to another key) or `none`.
    pinned: &'static str,
}

/// `GET /api/v1/devices/{id}/enrollment`: whether the key the caller proves it holds (a
/// signature over the id and the time, `shoal_proto::EnrollmentProof`) is pinned to the device
/// id. Reads only. It needs no bearer token (a device has none), and tells a caller only about
/// a key it holds: whether the id is pinned, and whether to that key, never which other key.
async fn enrollment(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<EnrollmentAnswer>, ApiError> {
    use shoal_proto::enrollment::{KEY_HEADER, SIGNATURE_HEADER, TIME_HEADER};
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(ApiError::MissingProof { header: name })
    };
    let proof = shoal_proto::EnrollmentProof {
        key_id: header(KEY_HEADER)?,
        time: header(TIME_HEADER)?,
        signature: header(SIGNATURE_HEADER)?,
    };
    let key = proof.verify(&id, app.config.clock.now())?;
    let pinned = match app.store.pinned_key(&id)? {
        Some(k) if k == key.as_str() => "this_key",
        Some(_) => "other_key",
        None => "none",
    };
    Ok(Json(EnrollmentAnswer {
        device_id: id,
        key: key.to_string(),
        enrolled: pinned == "this_key",
        pinned,
    }))
}

/// The answer to an accepted report: what was accepted, and the collector's signed halt list
/// (sealed once per serial; `rollouts::Rollouts`).
#[derive(Serialize)]
pub struct ReportAnswer {
    #[serde(flatten)]
    pub accepted: Accepted,
    pub halts: SharedHalts,
}

/// The sealed list, shared by every answer until the serial changes (serialized, not cloned).
pub struct SharedHalts(Arc<crate::rollouts::Sealed>);

impl Serialize for SharedHalts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.signed.serialize(s)
    }
}

/// The answer to `GET /api/v1/collector`: the public key to pin in the agents' `[collector]
/// key`, and the halt list's serial. Public (no token): it is what devices are told to trust.
#[derive(Serialize)]
struct CollectorInfo {
    key: String,
    halts_serial: u64,
    halted: usize,
}

async fn collector_info(State(app): State<Arc<AppState>>) -> Json<CollectorInfo> {
    let sealed = app.rollouts.sealed();
    Json(CollectorInfo {
        key: app.rollouts.key().key_id().to_string(),
        halts_serial: sealed.list.serial,
        halted: sealed.list.halted.len(),
    })
}

/// The body of `POST /api/v1/rollouts/{commit}/halt` and `/resume` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HaltBody {
    #[serde(default)]
    reason: String,
}

/// Reads an admin body of at most `MAX_ADMIN_BODY` bytes; a refusal is a `BadRequest`.
async fn admin_body(body: Body) -> Result<Vec<u8>, ApiError> {
    read_limited(body, MAX_ADMIN_BODY)
        .await
        .map_err(|e| match e {
            ApiError::Rejected(Rejection::OversizedBody { limit }) => ApiError::BadRequest {
                reason: format!("body is over {limit} bytes"),
            },
            ApiError::Rejected(r) => ApiError::BadRequest {
                reason: r.to_string(),
            },
            other => other,
        })
}

/// An empty body, or a JSON object `{"reason": "..."}` (no other field; not an array, which
/// serde would otherwise take for the struct).
fn halt_body(bytes: &[u8]) -> Result<HaltBody, ApiError> {
    let bad = |e: String| ApiError::BadRequest {
        reason: format!("body is not {{\"reason\": \"...\"}}: {e}"),
    };
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Ok(HaltBody::default()),
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| bad(e.to_string())),
        Some(_) => Err(bad("not a JSON object".to_owned())),
    }
}

fn parse_commit(input: &str) -> Result<shoal_proto::CommitId, ApiError> {
    shoal_proto::CommitId::parse(input).map_err(|_| ApiError::BadCommit {
        input: input.to_owned(),
    })
}

/// `POST /api/v1/rollouts/{commit}/halt`: devices that have not applied the commit will not
/// (idempotent: a halted commit stays halted with its first reason).
async fn halt_rollout(
    State(app): State<Arc<AppState>>,
    Path(commit): Path<String>,
    body: Body,
) -> Result<Json<HaltChanged>, ApiError> {
    let commit = parse_commit(&commit)?;
    let body = halt_body(&admin_body(body).await?)?;
    change_halt(app, commit, Some(body.reason), String::new()).await
}

/// `POST /api/v1/rollouts/{commit}/resume`: lifts the halt (idempotent).
async fn resume_rollout(
    State(app): State<Arc<AppState>>,
    Path(commit): Path<String>,
    body: Body,
) -> Result<Json<HaltChanged>, ApiError> {
    let commit = parse_commit(&commit)?;
    // The reason of a resume is only logged; its length is checked as a halt's is.
    let reason = halt_body(&admin_body(body).await?)?.reason;
    let len = reason.chars().count();
    if len > shoal_fleet::rollout::MAX_REASON {
        return Err(HaltRefusal::ReasonTooLong { len }.into());
    }
    change_halt(app, commit, None, reason).await
}

async fn change_halt(
    app: Arc<AppState>,
    commit: shoal_proto::CommitId,
    halt: Option<String>,
    resume_reason: String,
) -> Result<Json<HaltChanged>, ApiError> {
    let action = if halt.is_some() { "halt" } else { "resume" };
    let done = blocking(move || {
        app.rollouts.change(&commit, halt).map_err(|e| match e {
            HaltError::Refused(r) => ApiError::HaltRefused(r),
            HaltError::Store(e) => e.into(),
        })
    })
    .await?;
    tracing::info!(
        action,
        commit = %done.commit,
        changed = done.changed,
        serial = done.serial,
        reason = done.reason.as_deref().unwrap_or(&resume_reason),
        "admin: rollout {action}"
    );
    Ok(Json(done))
}

async fn post_report(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ReportAnswer>, ApiError> {
    let result = receive(&app, &headers, body).await;
    match &result {
        Ok(a) => {
            app.metrics.accepted(a.enrolled);
            if a.enrolled {
                // Worth an operator's eye: a new key speaks for this device from now on.
                tracing::info!(device = %a.device_id, key = %a.key_id, sequence = a.sequence, "device enrolled with a token; key pinned");
            } else {
                tracing::debug!(device = %a.device_id, sequence = a.sequence, "report accepted");
            }
        }
        Err(ApiError::Rejected(r)) => {
            app.metrics.rejected(r);
            tracing::info!(reason = r.reason_code(), error = %r, "report rejected");
        }
        Err(_) => app.metrics.store_error(),
    }
    let accepted = result?;
    Ok(Json(ReportAnswer {
        accepted,
        halts: SharedHalts(app.rollouts.sealed()),
    }))
}

async fn receive(app: &AppState, headers: &HeaderMap, body: Body) -> Result<Accepted, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_ENVELOPE_BYTES) {
        return Err(Rejection::OversizedBody {
            limit: MAX_ENVELOPE_BYTES,
        }
        .into());
    }
    let bytes = read_limited(body, MAX_ENVELOPE_BYTES).await?;
    if headers.contains_key(ENROLL_HEADER) {
        app.metrics.enroll_token_presented();
    }
    let enrollment = match headers.get(ENROLL_HEADER) {
        None => Enrollment::Absent,
        Some(v) => match &app.config.enroll_tokens {
            Some(tokens) if tokens.accepts(v.as_bytes()) => Enrollment::Valid,
            _ => Enrollment::Invalid,
        },
    };
    let now = app.config.clock.now();
    // Decoding runs here, on every worker in parallel (the signer's key decompressed once per
    // key, not per report: `signers`); the signature is checked by the writer thread with every
    // report queued meanwhile, as one batch (a third of the CPU of one-by-one checks), right
    // before it records the batch: one hand-over between threads each way per report.
    let envelope = app.signers.decode(&bytes)?;
    let accepted = app
        .writer
        .submit(envelope, enrollment, now)
        .await
        .map_err(|e| match e {
            IngestError::Rejected(r) => ApiError::Rejected(r),
            IngestError::Store(e) => e.into(),
        })?;
    Ok(accepted)
}

async fn read_limited(mut body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Rejection::MalformedEnvelope {
            reason: format!("reading the request body failed: {e}"),
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(Rejection::OversizedBody { limit }.into());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// The body of `PUT /api/v1/devices/{id}/key`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    /// `ed25519:BASE64`, or an OpenSSH `ssh-ed25519 AAAA... [comment]` line.
    key: String,
}

/// `PUT /api/v1/devices/{id}/key`: pins `{"key": ...}` to the device, replacing its key.
async fn put_device_key(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<KeyChanged>, ApiError> {
    let parsed: Result<KeyChange, ApiError> = async {
        let bytes = admin_body(body).await?;
        let body: KeyBody = serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest {
            reason: format!("body is not {{\"key\": \"ed25519:...\"}}: {e}"),
        })?;
        let key = KeyId::parse(&body.key).map_err(|e| ApiError::BadKey {
            reason: e.to_string(),
        })?;
        Ok(KeyChange::Pin(key))
    }
    .await;
    match parsed {
        Ok(change) => change_key(&app, id, change).await,
        Err(e) => {
            app.metrics.key_change("rekey", "refused");
            tracing::info!(device = ?id, action = "rekey", reason = e.reason_code(), error = %e, "admin: key change refused");
            Err(e)
        }
    }
}

/// `DELETE /api/v1/devices/{id}/key`: unpins the device's key; its next report with a valid
/// enrollment token pins a key again.
async fn delete_device_key(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<KeyChanged>, ApiError> {
    change_key(&app, id, KeyChange::Unpin).await
}

/// Hands the change to the writer (so it is ordered with reports and atomic), then counts and
/// logs what happened.
async fn change_key(
    app: &AppState,
    device_id: String,
    change: KeyChange,
) -> Result<Json<KeyChanged>, ApiError> {
    let action = change.action();
    match app.writer.change_key(device_id.clone(), change).await {
        Ok(done) => {
            let result = if done.changed { "changed" } else { "unchanged" };
            app.metrics.key_change(action, result);
            tracing::info!(
                action,
                result,
                device = %done.device_id,
                previous_key = done.previous_key_id.as_deref().unwrap_or("none"),
                key = done.key_id.as_deref().unwrap_or("none"),
                "admin: device key {}",
                if done.key_id.is_some() { "pinned" } else { "unpinned" }
            );
            Ok(Json(done))
        }
        Err(KeyChangeError::Refused(r)) => {
            app.metrics.key_change(action, "refused");
            tracing::info!(device = ?device_id, action, reason = r.reason_code(), error = %r, "admin: key change refused");
            Err(r.into())
        }
        Err(KeyChangeError::Store(e)) => {
            app.metrics.store_error();
            Err(e.into())
        }
    }
}

/// Filters of `GET /api/v1/devices` and the `/devices` page.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeviceFilter {
    pub status: Option<Status>,
    /// Every pair must match.
    pub labels: Vec<(String, String)>,
    /// Prefix of the commit id.
    pub commit: Option<String>,
    /// Only devices not seen for more than this many seconds.
    pub stale: Option<u64>,
    /// Paging: start after this device id.
    pub after: Option<String>,
    pub limit: usize,
}

impl DeviceFilter {
    /// Parses `status=&label=k=v&commit=&stale=SECONDS&after=ID&limit=N` (label repeatable).
    pub fn parse(query: Option<&str>) -> Result<DeviceFilter, ApiError> {
        let bad = |reason: String| ApiError::BadQuery { reason };
        let mut f = DeviceFilter {
            limit: DEFAULT_LIMIT,
            ..DeviceFilter::default()
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "status" => {
                    f.status = Some(Status::from_wire(&v).ok_or_else(|| {
                        let all: Vec<_> = Status::ALL.iter().map(|s| s.as_str()).collect();
                        bad(format!("status {v:?} is not one of {}", all.join(", ")))
                    })?)
                }
                "label" => {
                    let (lk, lv) = v
                        .split_once('=')
                        .ok_or_else(|| bad(format!("label {v:?} is not KEY=VALUE")))?;
                    f.labels.push((lk.to_owned(), lv.to_owned()));
                }
                "commit" => f.commit = Some(v.into_owned()),
                "stale" => {
                    f.stale = Some(v.parse().map_err(|_| {
                        bad(format!("stale {v:?} is not a number of seconds"))
                    })?)
                }
                "after" => f.after = Some(v.into_owned()),
                "limit" => {
                    f.limit = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| bad(format!("limit {v:?} is not 1 to {MAX_LIMIT}")))?
                }
                other => {
                    return Err(bad(format!(
                        "unknown parameter {other:?}; known: status, label, commit, stale, after, limit"
                    )))
                }
            }
        }
        Ok(f)
    }

    pub fn matches(&self, r: &DeviceRecord, now: u64) -> bool {
        let report = &r.report;
        self.status.is_none_or(|s| report.status == s)
            && self
                .labels
                .iter()
                .all(|(k, v)| report.labels.get(k) == Some(v))
            && self
                .commit
                .as_deref()
                .is_none_or(|c| report.commit.as_deref().is_some_and(|rc| rc.starts_with(c)))
            && self
                .stale
                .is_none_or(|s| now.saturating_sub(r.last_seen) > s)
    }
}

/// A device as the API shows it: the latest report plus what the collector knows.
#[derive(Debug, Serialize)]
pub struct DeviceView {
    #[serde(flatten)]
    pub report: Report,
    /// The key that signed the latest report.
    pub key_id: String,
    /// The key the device is pinned to now (`None`: unpinned, it may enroll again with a token).
    /// Differs from `key_id` after a re-key until the device reports with its new key.
    pub pinned_key_id: Option<String>,
    pub first_seen: u64,
    pub last_seen: u64,
    pub stale: bool,
}

impl DeviceView {
    fn new(r: DeviceRecord, pinned: Option<String>, now: u64, stale_after: u64) -> DeviceView {
        DeviceView {
            stale: now.saturating_sub(r.last_seen) > stale_after,
            report: r.report,
            key_id: r.key_id,
            pinned_key_id: pinned,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
        }
    }
}

#[derive(Serialize)]
struct DeviceList {
    devices: Vec<DeviceView>,
    /// Pass as `after=` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<String>,
}

/// Scans devices in id order and keeps up to `filter.limit` matches; `true` if more match.
fn select(
    app: &AppState,
    filter: &DeviceFilter,
    now: u64,
) -> Result<(Vec<(String, DeviceRecord)>, bool), ApiError> {
    // Pages of the store, filtered here (one filter for every store).
    const PAGE: usize = 512;
    let mut out = Vec::new();
    let mut after = filter.after.clone();
    loop {
        let page = app.store.devices_page(after.as_deref(), PAGE)?;
        let last = page.len() < PAGE;
        after = page.last().map(|(id, _)| id.clone());
        for (id, record) in page {
            if !filter.matches(&record, now) {
                continue;
            }
            if out.len() == filter.limit {
                return Ok((out, true));
            }
            out.push((id, record));
        }
        if last {
            return Ok((out, false));
        }
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Unavailable {
            reason: format!("read task failed: {e}"),
        })?
}

async fn list_devices(
    State(app): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let filter = DeviceFilter::parse(query.as_deref())?;
    let now = app.config.clock.now();
    let stale_after = app.config.stale_after;
    let (devices, next_after) = blocking(move || {
        let (devices, more) = select(&app, &filter, now)?;
        let next_after = if more {
            devices.last().map(|(id, _)| id.clone())
        } else {
            None
        };
        let views = devices
            .into_iter()
            .map(|(id, r)| {
                let pinned = app.store.pinned_key(&id)?;
                Ok(DeviceView::new(r, pinned, now, stale_after))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok((views, next_after))
    })
    .await?;
    let list = DeviceList {
        devices,
        next_after,
    };
    Ok(Json(serde_json::to_value(list).map_err(|e| {
        ApiError::Unavailable {
            reason: format!("encoding the device list: {e}"),
        }
    })?))
}

async fn one_device(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let now = app.config.clock.now();
    let record = app.store.device(&id)?.ok_or_else(|| ApiError::NotFound {
        what: format!("device {id:?}"),
    })?;
    let pinned = app.store.pinned_key(&id)?;
    Ok(Json(DeviceView::new(
        record,
        pinned,
        now,
        app.config.stale_after,
    )))
}

#[derive(Serialize)]
struct History {
    device_id: String,
    /// Newest first, at most `record::HISTORY_LIMIT` entries.
    history: Vec<HistoryEntry>,
}

async fn device_history(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<History>, ApiError> {
    if app.store.device(&id)?.is_none() {
        return Err(ApiError::NotFound {
            what: format!("device {id:?}"),
        });
    }
    let history = app.store.history(&id)?;
    Ok(Json(History {
        device_id: id,
        history,
    }))
}

async fn summary(
    State(app): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Summary>, ApiError> {
    let mut stale_after = app.config.stale_after;
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "stale" => {
                stale_after = v.parse().map_err(|_| ApiError::BadQuery {
                    reason: format!("stale {v:?} is not a number of seconds"),
                })?
            }
            other => {
                return Err(ApiError::BadQuery {
                    reason: format!("unknown parameter {other:?}; known: stale"),
                })
            }
        }
    }
    Ok(Json(
        app.store.summary(app.config.clock.now(), stale_after)?,
    ))
}

async fn metrics(State(app): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    let fleet = app
        .store
        .summary(app.config.clock.now(), app.config.stale_after)?;
    let rollouts = app.rollouts.view()?;
    let sealed = app.rollouts.sealed();
    let mut text = app.metrics.render(&fleet);
    text.push_str(&crate::metrics::render_rollouts(
        &rollouts,
        &sealed.list.halted,
        sealed.list.serial,
    ));
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    ))
}

/// A page request that failed: the API's status code and reason, as an HTML page.
#[derive(Debug)]
pub struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if status.is_server_error() {
            tracing::error!(error = %self.0, "page request failed");
        } else {
            tracing::debug!(error = %self.0, status = status.as_u16(), "page request refused");
        }
        let title = status.canonical_reason().unwrap_or("Error");
        let html = crate::page::error(status.as_u16(), title, &self.0.to_string());
        (status, Html(html)).into_response()
    }
}

/// `/`: the summary page (counts only, no device scan). The page at `/` used to list devices
/// with the list's filters: a query there is sent on to `/devices` with the same query, so old
/// links keep working.
async fn summary_page(
    State(app): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        return Ok(Redirect::to(&format!("/devices?{q}")).into_response());
    }
    let now = app.config.clock.now();
    let summary = app
        .store
        .summary(now, app.config.stale_after)
        .map_err(ApiError::from)?;
    Ok(Html(crate::page::summary(&summary)).into_response())
}

/// `/devices`: the device list with the API's filters, at most `PAGE_ROWS` a page. Empty
/// parameters are ignored (an HTML form sends every field, filled or not).
async fn devices_page(
    State(app): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, PageError> {
    // The serializer is not `Send`: done with before the first await.
    let filled = {
        let mut filled = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if !v.is_empty() {
                filled.append_pair(&k, &v);
            }
        }
        filled.finish()
    };
    let mut filter = DeviceFilter::parse(Some(&filled))?;
    filter.limit = filter.limit.min(PAGE_ROWS);
    let now = app.config.clock.now();
    let stale_after = app.config.stale_after;
    let shown_filter = filter.clone();
    let (shown, more) = blocking(move || select(&app, &filter, now)).await?;
    let next_after = if more {
        shown.last().map(|(id, _)| id.as_str())
    } else {
        None
    };
    Ok(Html(crate::page::device_list(
        &shown_filter,
        &shown,
        next_after,
        now,
        stale_after,
    )))
}

/// `/devices/{id}`: the device's latest report and its kept history; 404 page when unknown.
async fn device_page(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Html<String>, PageError> {
    let now = app.config.clock.now();
    let stale_after = app.config.stale_after;
    let html = blocking(move || {
        let record = app.store.device(&id)?.ok_or_else(|| ApiError::NotFound {
            what: format!("device {id:?}"),
        })?;
        let pinned = app.store.pinned_key(&id)?;
        let history = app.store.history(&id)?;
        Ok(crate::page::device(
            &id,
            &record,
            pinned.as_deref(),
            &history,
            now,
            stale_after,
        ))
    })
    .await?;
    Ok(Html(html))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_parsing() {
        let f = DeviceFilter::parse(Some(
            "status=rolled_back&label=role=gateway&label=site=berlin&commit=abc&stale=60&limit=5",
        ))
        .unwrap();
        assert_eq!(f.status, Some(Status::RolledBack));
        assert_eq!(
            f.labels,
            vec![
                ("role".to_owned(), "gateway".to_owned()),
                ("site".to_owned(), "berlin".to_owned())
            ]
        );
        assert_eq!(f.commit.as_deref(), Some("abc"));
        assert_eq!((f.stale, f.limit), (Some(60), 5));
        for bad in ["status=ok", "label=x", "stale=soon", "limit=0", "color=red"] {
            let e = DeviceFilter::parse(Some(bad)).unwrap_err();
            assert_eq!(e.reason_code(), "bad_query", "{bad}");
        }
    }
}
