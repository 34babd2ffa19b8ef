//! The async Rust client of the grantfs HTTP API: one method per endpoint, typed bodies, API errors
//! surfaced with their machine code, and a server-sent-event reader for the session event stream.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::*;
use crate::error::ErrorBody;
use crate::ticket::JwkSet;
use crate::{ErrorCode, GrantId, SessionId};

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an API error.
    #[error("{status} {}: {}", .body.code, .body.message)]
    Api { status: u16, body: ErrorBody },
    /// The server could not be reached or the connection broke.
    #[error("control plane unreachable at {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered something that is not the contract.
    #[error("unexpected answer from {url}: {detail}")]
    Protocol { url: String, detail: String },
}

impl ClientError {
    /// The API error code, when the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { body, .. } => Some(body.code),
            _ => None,
        }
    }
    /// Whether the failure is about reaching the server (worth retrying), not an answer.
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` field; `message` when absent; `keepalive` for a `: keepalive` comment.
    pub event: String,
    pub data: String,
}

/// A client of one control plane, optionally holding an API key.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn enc(s: &str) -> String {
    // Path segments of the API are names and ids; encode anything outside the safe set.
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client of the control plane at `base` (e.g. `http://127.0.0.1:7070`).
    pub fn new(base: &str, api_key: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Transport {
                url: base.to_owned(),
                source: e,
            })?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            api_key,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn req(&self, method: Method, path: &str) -> (RequestBuilder, String) {
        let url = format!("{}{}", self.base, path);
        let mut rb = self
            .http
            .request(method, &url)
            .timeout(Duration::from_secs(30));
        if let Some(k) = &self.api_key {
            rb = rb.bearer_auth(k);
        }
        (rb, url)
    }

    async fn send<T: DeserializeOwned>(rb: RequestBuilder, url: String) -> Result<T, ClientError> {
        let resp = rb.send().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            source: e,
        })?;
        Self::decode(resp, url).await
    }

    async fn decode<T: DeserializeOwned>(
        resp: reqwest::Response,
        url: String,
    ) -> Result<T, ClientError> {
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            source: e,
        })?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
                url,
                detail: format!("{status}: {e}"),
            })
        } else {
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => Err(ClientError::Api {
                    status: status.as_u16(),
                    body,
                }),
                Err(_) => Err(ClientError::Protocol {
                    url,
                    detail: format!("{status} without an error body"),
                }),
            }
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (rb, url) = self.req(Method::GET, path);
        Self::send(rb, url).await
    }
    async fn get_query<T: DeserializeOwned, Q: Serialize>(
        &self,
        path: &str,
        q: &Q,
    ) -> Result<T, ClientError> {
        let (rb, url) = self.req(Method::GET, path);
        Self::send(rb.query(q), url).await
    }
    async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let (rb, url) = self.req(Method::POST, path);
        Self::send(rb.json(body), url).await
    }
    async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (rb, url) = self.req(Method::DELETE, path);
        Self::send(rb, url).await
    }

    pub async fn healthz(&self) -> Result<serde_json::Value, ClientError> {
        self.get("/healthz").await
    }
    pub async fn jwks(&self) -> Result<JwkSet, ClientError> {
        self.get("/.well-known/jwks.json").await
    }

    pub async fn create_workspace(&self, name: &str) -> Result<Workspace, ClientError> {
        self.post("/v1/workspaces", &CreateWorkspace { name: name.into() })
            .await
    }
    pub async fn list_workspaces(&self) -> Result<List<Workspace>, ClientError> {
        self.get("/v1/workspaces").await
    }
    pub async fn get_workspace(&self, handle: &str, name: &str) -> Result<Workspace, ClientError> {
        self.get(&format!("/v1/workspaces/{}/{}", enc(handle), enc(name)))
            .await
    }
    pub async fn delete_workspace(
        &self,
        handle: &str,
        name: &str,
    ) -> Result<RevokeCounts, ClientError> {
        self.delete(&format!("/v1/workspaces/{}/{}", enc(handle), enc(name)))
            .await
    }

    pub async fn create_tenant(&self, req: &CreateTenant) -> Result<Tenant, ClientError> {
        self.post("/v1/tenants", req).await
    }
    pub async fn list_tenants(&self) -> Result<List<Tenant>, ClientError> {
        self.get("/v1/tenants").await
    }
    pub async fn get_tenant(&self, slug: &str) -> Result<Tenant, ClientError> {
        self.get(&format!("/v1/tenants/{}", enc(slug))).await
    }
    pub async fn delete_tenant(&self, slug: &str) -> Result<RevokeCounts, ClientError> {
        self.delete(&format!("/v1/tenants/{}", enc(slug))).await
    }

    pub async fn create_grant(&self, req: &CreateGrant) -> Result<Grant, ClientError> {
        self.post("/v1/grants", req).await
    }
    pub async fn list_grants(&self, f: &GrantFilter) -> Result<List<Grant>, ClientError> {
        self.get_query("/v1/grants", f).await
    }
    pub async fn get_grant(&self, id: &GrantId) -> Result<Grant, ClientError> {
        self.get(&format!("/v1/grants/{}", enc(id.as_str()))).await
    }
    pub async fn revoke_grant(&self, id: &GrantId) -> Result<Grant, ClientError> {
        self.delete(&format!("/v1/grants/{}", enc(id.as_str())))
            .await
    }
    pub async fn revoke_grants(&self, req: &RevokeGrants) -> Result<RevokeCounts, ClientError> {
        self.post("/v1/grants/revoke", req).await
    }

    pub async fn create_ticket(&self, req: &CreateTicket) -> Result<TicketIssued, ClientError> {
        self.post("/v1/tickets", req).await
    }

    pub async fn list_sessions(&self, f: &SessionFilter) -> Result<List<Session>, ClientError> {
        self.get_query("/v1/sessions", f).await
    }
    pub async fn get_session(&self, id: &SessionId) -> Result<Session, ClientError> {
        self.get(&format!("/v1/sessions/{}", enc(id.as_str())))
            .await
    }
    pub async fn revoke_session(&self, id: &SessionId) -> Result<Session, ClientError> {
        self.delete(&format!("/v1/sessions/{}", enc(id.as_str())))
            .await
    }

    /// The account's audit records after id `since` (at most `limit`, 1 to 1000), oldest first:
    /// `{"items": [...], "next_since": id}`.
    pub async fn audit(&self, since: i64, limit: u32) -> Result<serde_json::Value, ClientError> {
        self.get_query(
            "/v1/audit",
            &[("since", since), ("limit", i64::from(limit))],
        )
        .await
    }

    /// Exchanges a mount ticket for a session token (no API key needed).
    pub async fn exchange(&self, ticket: &str) -> Result<Exchange, ClientError> {
        let url = format!("{}/v1/sessions/exchange", self.base);
        let rb = self
            .http
            .post(&url)
            .timeout(Duration::from_secs(30))
            .json(&ExchangeRequest {
                ticket: ticket.to_owned(),
            });
        Self::send(rb, url).await
    }

    /// Ends a session cleanly (unmount), with its session token.
    pub async fn end_session(&self, id: &SessionId, token: &str) -> Result<Session, ClientError> {
        let url = format!("{}/v1/sessions/{}/end", self.base, enc(id.as_str()));
        let rb = self
            .http
            .post(&url)
            .timeout(Duration::from_secs(10))
            .bearer_auth(token);
        Self::send(rb, url).await
    }

    /// Opens the session's event stream. An error answer (e.g. `403 session_revoked`) comes back
    /// as `Err` before any event.
    pub async fn events(
        &self,
        id: &SessionId,
        token: &str,
    ) -> Result<impl Stream<Item = Result<SseEvent, ClientError>> + Send + use<>, ClientError> {
        let url = format!("{}/v1/sessions/{}/events", self.base, enc(id.as_str()));
        let resp = self
            .http
            .get(&url)
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| ClientError::Transport {
                url: url.clone(),
                source: e,
            })?;
        if resp.status() != StatusCode::OK {
            return Err(Self::decode::<serde_json::Value>(resp, url)
                .await
                .err()
                .unwrap_or_else(|| ClientError::Protocol {
                    url: String::new(),
                    detail: "event stream answered 2xx other than 200".into(),
                }));
        }
        let mut parser = SseParser::default();
        let stream = resp
            .bytes_stream()
            .map(move |chunk| match chunk {
                Ok(bytes) => Ok(parser.push(&bytes)),
                Err(e) => Err(ClientError::Transport {
                    url: url.clone(),
                    source: e,
                }),
            })
            .flat_map(|r| {
                futures_util::stream::iter(match r {
                    Ok(evs) => evs.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                })
            });
        Ok(stream)
    }
}

/// Longest line, and largest event, the parser keeps; longer ones are dropped whole, so a broken or
/// hostile server cannot grow the agent's memory without bound.
pub const MAX_SSE_LINE: usize = 64 * 1024;

/// An incremental parser of `text/event-stream` bytes, linear in its input and bounded in memory.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Bytes of `buf` already known to hold no newline.
    scanned: usize,
    /// Dropping an over-long line until its newline.
    skipping_line: bool,
    /// Dropping an over-large event until its blank line.
    skipping_event: bool,
    event: Option<String>,
    data: Vec<String>,
    data_len: usize,
}

impl SseParser {
    /// Feeds bytes; returns the events completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(off) = self.buf[start + self.scanned..]
            .iter()
            .position(|&b| b == b'\n')
        {
            let end = start + self.scanned + off;
            self.scanned = 0;
            let skipping = std::mem::take(&mut self.skipping_line);
            let mut line = &self.buf[start..end];
            start = end + 1;
            if skipping {
                continue;
            }
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            self.line(line, &mut out);
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > MAX_SSE_LINE {
            self.buf.clear();
            self.scanned = 0;
            self.skipping_line = true;
        }
        out
    }

    fn line(&mut self, line: String, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if !std::mem::take(&mut self.skipping_event)
                && (!self.data.is_empty() || self.event.is_some())
            {
                out.push(SseEvent {
                    event: self.event.take().unwrap_or_else(|| "message".into()),
                    data: std::mem::take(&mut self.data).join("\n"),
                });
            }
            self.event = None;
            self.data.clear();
            self.data_len = 0;
        } else if let Some(c) = line.strip_prefix(':') {
            out.push(SseEvent {
                event: "keepalive".into(),
                data: c.trim().to_owned(),
            });
        } else {
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => self.event = Some(value.to_owned()),
                "data" if !self.skipping_event => {
                    self.data_len += value.len() + 1;
                    if self.data_len > MAX_SSE_LINE {
                        self.skipping_event = true;
                        self.data.clear();
                    } else {
                        self.data.push(value.to_owned());
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_handles_split_chunks_and_comments() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: sta").is_empty());
        let evs =
            p.push(b"te\ndata: {\"a\":1}\n\n: keepalive\n\nevent: revoked\r\ndata: x\r\n\r\n");
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: "state".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: "keepalive".into(),
                    data: "keepalive".into()
                },
                SseEvent {
                    event: "revoked".into(),
                    data: "x".into()
                },
            ]
        );
    }

    #[test]
    fn sse_parser_memory_is_bounded_and_recovers() {
        let mut p = SseParser::default();
        // A line that never ends: dropped, not kept.
        for _ in 0..100 {
            assert!(p.push(&[b'x'; 8192]).is_empty());
        }
        assert!(p.buf.len() <= MAX_SSE_LINE + 8192);
        // The stream recovers at the next line.
        let evs = p.push(b"\nevent: revoked\ndata: ok\n\n");
        assert_eq!(
            evs,
            vec![SseEvent {
                event: "revoked".into(),
                data: "ok".into()
            }]
        );
        // An event whose data lines add up past the cap is dropped whole.
        let mut big = Vec::new();
        for _ in 0..100 {
            big.extend_from_slice(b"data: ");
            big.extend_from_slice(&[b'y'; 1000]);
            big.push(b'\n');
        }
        big.extend_from_slice(b"\nevent: state\ndata: s\n\n");
        let evs = p.push(&big);
        assert_eq!(
            evs,
            vec![SseEvent {
                event: "state".into(),
                data: "s".into()
            }]
        );
    }

    #[test]
    fn sse_parser_is_split_independent() {
        let text = b"event: state\ndata: {\"a\":1}\n\n: keepalive\n\nevent: revoked\r\ndata: x\r\ndata: y\n\n";
        let whole = SseParser::default().push(text);
        for chunk in 1..8 {
            let mut p = SseParser::default();
            let got: Vec<_> = text.chunks(chunk).flat_map(|c| p.push(c)).collect();
            assert_eq!(got, whole, "chunk size {chunk}");
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(enc("a/b c"), "a%2Fb%20c");
        assert_eq!(enc("ses_AZ09"), "ses_AZ09");
    }
}
