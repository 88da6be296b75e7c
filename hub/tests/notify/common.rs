//! Shared helpers: a recording loopback HTTP server, sample incidents and
//! a fast egress client.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::post;
use time::OffsetDateTime;

use super::subject::{
    Channel, ChannelConfig, Egress, Incident, IncidentEvent, Notification, Severity, Transition,
};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("UTF-8 body")
    }
}

/// Records requests and answers with scripted statuses (then 200).
#[derive(Clone, Default)]
pub struct Recorder {
    reqs: Arc<Mutex<Vec<Captured>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Recorder {
    pub fn script(&self, codes: &[u16]) {
        self.script.lock().unwrap().extend(codes.iter().copied());
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.reqs.lock().unwrap().clone()
    }

    pub fn push(&self, c: Captured) -> StatusCode {
        self.reqs.lock().unwrap().push(c);
        let code = self.script.lock().unwrap().pop_front().unwrap_or(200);
        StatusCode::from_u16(code).unwrap()
    }
}

async fn record(
    State(rec): State<Recorder>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    rec.push(Captured {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
    })
}

/// Serves `router` on 127.0.0.1, returns the address.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

/// A server accepting POST on exactly `path` (anything else is 404).
pub async fn recording_server(path: &str) -> (SocketAddr, Recorder) {
    let rec = Recorder::default();
    let router = Router::new()
        .route(path, post(record))
        .with_state(rec.clone());
    (serve(router).await, rec)
}

/// Egress with short timeouts for tests.
pub fn egress() -> Egress {
    Egress::new()
        .unwrap()
        .with_timeouts(Duration::from_secs(3), Duration::from_secs(2))
}

/// Parses one channel from TOML and builds it.
pub fn channel(toml_src: &str) -> Arc<dyn Channel> {
    channel_config(toml_src).build(&egress()).unwrap()
}

pub fn channel_config(toml_src: &str) -> ChannelConfig {
    toml::from_str(toml_src).unwrap()
}

pub fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_767_571_200).unwrap()
}

pub fn sample_event(severity: Severity, transition: Transition) -> IncidentEvent {
    IncidentEvent {
        incident: Incident {
            id: "inc-42".to_owned(),
            title: "Disk almost full on pve1".to_owned(),
            severity,
            nodes: vec!["pve1".to_owned()],
            narrative: "The pool rpool is 93% full.\nBackups will fail tonight.".to_owned(),
            url: Some("https://wingman.lan/incidents/inc-42".to_owned()),
        },
        transition,
    }
}

pub fn sample(severity: Severity, transition: Transition) -> Notification {
    Notification::for_event("n-1".to_owned(), &sample_event(severity, transition), now())
}
