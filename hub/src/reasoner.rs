//! The reasoner: the shell that connects incidents and chat to the language
//! models in [`crate::llm`], with back-pressure and cost control.
//!
//! - A bounded priority [`JobQueue`]: chat above narratives, narratives of
//!   critical incidents above warning above info. Overflow policy
//!   [`Overflow::EvictLowest`]: a full queue drops its lowest-priority, newest
//!   job to make room for a more important one, else refuses the new job (and
//!   counts it). The engine task hands incidents over with [`Reasoner::offer`],
//!   which never waits.
//! - Per-provider concurrency limits (a semaphore each).
//! - A circuit [`Breaker`] per provider: open after `breaker_failures`
//!   consecutive failed calls, half-open (one probe) after
//!   `breaker_cooldown_secs`.
//! - A monthly token budget per provider, counted in the store
//!   (`llm_usage`); once used up, calls stop and pages and the API say why.
//!
//! A narrative job builds a [`CloudPrompt`] from the incident's evidence
//! (`E<n>`, the numbers the page anchors), its conditions (`F<n>`), the masked
//! templates its evidence refers to with their counts (`T<n>`), the
//! deterministic narrative (`N1`) and the ids of matching skills; calls the
//! routed provider; validates the [`IncidentNarrative`]; retries once on
//! invalid output, and otherwise keeps the deterministic narrative and records
//! why. Every HTTP attempt is stored as an exchange (the exact request body).
//! Prompt and response bodies are logged at TRACE at most.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wingman_protocol::logs::{MaskedTemplate, Redactor};

use crate::engine::{Incident, IncidentState, Severity, Subject};
use crate::llm::{
    self, CloudPrompt, FactKind, FactLine, IncidentNarrative, LlmError, PromptBuilder, PromptError,
    PromptRef, Router, TaskKind,
};
use crate::store::{DynStore, ExchangeRow, ModelNarrativeRow};

/// `[reasoner]`: queue, concurrency, breaker and budgets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReasonerConfig {
    /// Jobs waiting for a model (default 64).
    pub queue_capacity: usize,
    /// What a full queue does (default `evict_lowest`).
    pub overflow: Overflow,
    /// Worker tasks (default 2).
    pub workers: usize,
    /// Calls in flight per provider unless named in `concurrency` (default 2).
    pub default_concurrency: usize,
    /// Calls in flight per provider name, e.g. `{ ollama = 1 }`.
    pub concurrency: BTreeMap<String, usize>,
    /// Consecutive failed calls that open a provider's breaker (default 5).
    pub breaker_failures: u32,
    /// Seconds an open breaker waits before one probe call (default 60).
    pub breaker_cooldown_secs: u64,
    /// Tokens (in + out) per provider per calendar month (UTC); a provider
    /// not named here has no budget. E.g. `{ openai = 2000000 }`.
    pub monthly_token_budget: BTreeMap<String, u64>,
    /// How long a chat question may wait for its answer (default 90 s).
    pub chat_timeout_secs: u64,
}

impl Default for ReasonerConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 64,
            overflow: Overflow::EvictLowest,
            workers: 2,
            default_concurrency: 2,
            concurrency: BTreeMap::new(),
            breaker_failures: 5,
            breaker_cooldown_secs: 60,
            monthly_token_budget: BTreeMap::new(),
            chat_timeout_secs: 90,
        }
    }
}

/// Overflow policy of the job queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Drop the lowest-priority (then newest) queued job when the new one is
    /// more important; otherwise refuse the new job. Critical narratives and
    /// chat are never pushed out by less important work.
    #[default]
    EvictLowest,
    /// Refuse the new job, whatever its priority.
    DropNewest,
}

/// Job priority, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Narrative of an info incident.
    Info,
    /// Narrative of a warning incident.
    Warning,
    /// Narrative of a critical incident.
    Critical,
    /// An operator waiting for a chat answer.
    Chat,
}

impl From<Severity> for Priority {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Info => Self::Info,
            Severity::Warning => Self::Warning,
            Severity::Critical => Self::Critical,
        }
    }
}

/// A bounded priority queue (pure; the shell locks it).
#[derive(Debug)]
pub struct JobQueue<J> {
    cap: usize,
    overflow: Overflow,
    seq: u64,
    items: BTreeMap<(Reverse<Priority>, u64), (Option<String>, J)>,
    dropped: u64,
}

impl<J> JobQueue<J> {
    /// An empty queue holding at most `cap` jobs (at least 1).
    pub fn new(cap: usize, overflow: Overflow) -> Self {
        Self {
            cap: cap.max(1),
            overflow,
            seq: 0,
            items: BTreeMap::new(),
            dropped: 0,
        }
    }

    /// Queues `job`. A queued job with the same `key` is replaced. Returns
    /// the job that was dropped (evicted or refused), if any.
    pub fn push(&mut self, prio: Priority, key: Option<String>, job: J) -> Option<J> {
        if let Some(k) = &key
            && let Some(old) = self
                .items
                .iter()
                .find(|(_, (kk, _))| kk.as_ref() == Some(k))
                .map(|(pos, _)| *pos)
        {
            self.items.remove(&old);
        }
        let mut dropped = None;
        if self.items.len() >= self.cap {
            let lowest = self.items.keys().next_back().copied();
            match (self.overflow, lowest) {
                (Overflow::EvictLowest, Some(pos)) if pos.0.0 < prio => {
                    dropped = self.items.remove(&pos).map(|(_, j)| j);
                }
                _ => {
                    self.dropped += 1;
                    return Some(job);
                }
            }
            self.dropped += 1;
        }
        self.seq += 1;
        self.items.insert((Reverse(prio), self.seq), (key, job));
        dropped
    }

    /// The most important, oldest job.
    pub fn pop(&mut self) -> Option<J> {
        self.items.pop_first().map(|(_, (_, j))| j)
    }

    /// Jobs queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Jobs dropped by the overflow policy so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// A circuit breaker (pure: every call takes `now`, Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    threshold: u32,
    cooldown_ms: i64,
    failures: u32,
    open_until: Option<i64>,
    probing: bool,
}

/// What a breaker allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused for this long.
    Open {
        /// Milliseconds until a probe is allowed.
        retry_after_ms: i64,
    },
    /// One probe call is allowed (or in flight).
    HalfOpen,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `cooldown_ms`.
    pub fn new(threshold: u32, cooldown_ms: i64) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown_ms: cooldown_ms.max(0),
            failures: 0,
            open_until: None,
            probing: false,
        }
    }

    /// The state at `now`.
    pub fn state(&self, now: i64) -> BreakerState {
        match self.open_until {
            Some(t) if now < t => BreakerState::Open {
                retry_after_ms: t - now,
            },
            Some(_) => BreakerState::HalfOpen,
            None => BreakerState::Closed,
        }
    }

    /// May a call start now? `Err(ms)` is how long to wait. In the half-open
    /// state only one probe is let through until it reports.
    pub fn try_call(&mut self, now: i64) -> Result<(), i64> {
        match self.state(now) {
            BreakerState::Closed => Ok(()),
            BreakerState::Open { retry_after_ms } => Err(retry_after_ms),
            BreakerState::HalfOpen if self.probing => Err(self.cooldown_ms.clamp(1000, 60_000)),
            BreakerState::HalfOpen => {
                self.probing = true;
                Ok(())
            }
        }
    }

    /// Reports a call's outcome.
    pub fn record(&mut self, now: i64, ok: bool) {
        if ok {
            *self = Self::new(self.threshold, self.cooldown_ms);
            return;
        }
        self.failures = self.failures.saturating_add(1);
        if self.probing || self.failures >= self.threshold {
            self.open_until = Some(now + self.cooldown_ms);
            self.probing = false;
        }
    }
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 2,
        "warning" => 1,
        _ => 0,
    }
}

/// `YYYY-MM` (UTC) of a Unix ms time: the budget period.
pub fn month_of(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

/// A prompt for an incident and what the page needs to link its claims.
#[derive(Debug, Clone)]
pub struct IncidentPrompt {
    /// The privacy-gated prompt.
    pub prompt: CloudPrompt,
    /// Ref id → short label of the data item (for the page).
    pub labels: BTreeMap<String, String>,
    /// Skill ids offered to the model.
    pub skill_ids: BTreeSet<String>,
}

/// A masked template the incident's evidence refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInput {
    /// Node name.
    pub node: String,
    /// Masked template text, as stored.
    pub template: String,
    /// Lines counted.
    pub count: u64,
    /// Worst syslog priority.
    pub priority: u8,
}

fn fact_kind(s: &Subject) -> FactKind {
    match s {
        Subject::Node { .. } => FactKind::Host,
        Subject::Guest { .. } => FactKind::Guest,
        Subject::Container { .. } => FactKind::Container,
        Subject::Filesystem { .. } | Subject::Pool { .. } | Subject::Disk { .. } => {
            FactKind::Storage
        }
        Subject::Service { .. } => FactKind::Service,
        Subject::Task { .. } => FactKind::Task,
        Subject::LogTemplate { .. } => FactKind::Event,
        Subject::Resource { .. } => FactKind::Metric,
        Subject::Certificate { .. } => FactKind::Other,
    }
}

/// A similar past incident or outcome, as retrieval found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastIncident {
    /// `incident` or `outcome`.
    pub kind: String,
    /// Incident id.
    pub ref_id: String,
    /// Title.
    pub title: String,
    /// Excerpt (hub-built text: narrative, evidence summaries, resolution).
    pub text: String,
}

impl PastIncident {
    fn from_hit(h: &crate::memory::Hit) -> Self {
        Self {
            kind: h.payload.kind.as_str().to_owned(),
            ref_id: h.payload.ref_id.clone(),
            title: h.payload.title.clone(),
            text: h.payload.text.clone(),
        }
    }
}

/// Builds the narrative prompt of `inc` (pure; snapshot-tested).
pub fn incident_prompt(
    redactor: &Redactor,
    inc: &Incident,
    templates: &[TemplateInput],
    skills: &[(String, String)],
    past: &[PastIncident],
) -> Result<IncidentPrompt, PromptError> {
    let mut b = PromptBuilder::new(TaskKind::Narrative, redactor);
    let mut labels = BTreeMap::new();
    for e in &inc.evidence {
        let text = format!("{}: {}", e.detector.as_str(), e.summary);
        let id = b.evidence(e.n, "", e.severity.as_str(), u64::from(e.count), &text);
        labels.insert(id, format!("evidence {}", e.n));
    }
    for c in &inc.conditions {
        let state = if c.active { "active" } else { "cleared" };
        let text = format!(
            "{} {} ({}, {state}, activations {})",
            c.detector.as_str(),
            c.subject.display(),
            c.severity.as_str(),
            c.activations
        );
        let id = b.fact(&FactLine::new(
            c.subject.node(),
            fact_kind(&c.subject),
            text.clone(),
        ));
        labels.insert(id, redactor.redact(&text).text.into_owned());
    }
    for t in templates {
        let (masked, _) = MaskedTemplate::mask(&t.template, redactor);
        let id = b.template(
            &t.node,
            &masked,
            t.count,
            wingman_protocol::logs::Severity::from_priority(t.priority),
        );
        labels.insert(id, masked.as_str().to_owned());
    }
    let id = b.narrative(&inc.narrative);
    labels.insert(id, "the hub's deterministic narrative".to_owned());
    // Similar past incidents (hub-built narratives and outcome records, the
    // same data class as the narrative above).
    for p in past {
        let id = b.narrative(&format!(
            "Similar past {} {} ({}): {}",
            p.kind, p.ref_id, p.title, p.text
        ));
        labels.insert(id, format!("similar past incident {}", p.ref_id));
    }
    let mut skill_ids = BTreeSet::new();
    for (id, title) in skills {
        b.skill(id, title);
        skill_ids.insert(id.clone());
    }
    Ok(IncidentPrompt {
        prompt: b.build()?,
        labels,
        skill_ids,
    })
}

/// Why a chat question got no model answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// No provider is configured for chat.
    #[error("no language model is configured")]
    NoModel,
    /// The model is busy or failing; try again after this many seconds.
    #[error("the model is busy or failing; retry in {retry_after_secs} s")]
    Busy {
        /// Seconds to wait.
        retry_after_secs: u64,
        /// Why.
        reason: String,
    },
    /// Calls are stopped (budget used up).
    #[error("{0}")]
    Stopped(String),
}

/// A model's chat answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatAnswer {
    /// Answer text (shown escaped).
    pub answer: String,
    /// Provider.
    pub provider: String,
    /// Model.
    pub model: String,
}

enum Job {
    Narrative {
        incident: Box<Incident>,
        queued: Instant,
    },
    Chat {
        chat_id: String,
        prompt: Box<CloudPrompt>,
        reply: oneshot::Sender<Result<ChatAnswer, ChatError>>,
    },
}

/// The assistant's state for pages and the API.
#[derive(Debug, Clone, Serialize)]
pub struct AssistantStatus {
    /// Routed narrative provider, when any.
    pub provider: Option<String>,
    /// Its model.
    pub model: Option<String>,
    /// Why calls are stopped now (breaker open, budget used up).
    pub stopped: Option<String>,
    /// Its breaker.
    pub breaker: Option<BreakerState>,
    /// Tokens used this month.
    pub tokens_this_month: i64,
    /// The monthly budget, when set.
    pub monthly_budget: Option<u64>,
}

struct Inner {
    cfg: ReasonerConfig,
    router: Option<Router>,
    queue: Mutex<JobQueue<Job>>,
    wake: Notify,
    breakers: Mutex<BTreeMap<String, Breaker>>,
    permits: Mutex<BTreeMap<String, Arc<Semaphore>>>,
    offered: Mutex<BTreeMap<String, Severity>>,
    store: DynStore,
    redactor: Arc<Redactor>,
    skills: Arc<crate::skills::Library>,
    /// Retrieval, when enabled: similar past incidents for narratives and
    /// related items for chat.
    memory: std::sync::OnceLock<Arc<crate::recall::Memory>>,
    completed: AtomicU64,
    last_latency_ms: AtomicU64,
}

/// Handle to the reasoner; cheap to clone.
#[derive(Clone)]
pub struct Reasoner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Reasoner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reasoner")
            .field("configured", &self.inner.router.is_some())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn clamp_i64(v: Option<u64>) -> Option<i64> {
    v.map(|x| i64::try_from(x).unwrap_or(i64::MAX))
}

impl Reasoner {
    /// A reasoner over the configured providers. A provider that cannot be
    /// built (e.g. no key) is reported and left out; with none the hub keeps
    /// the deterministic narratives.
    pub fn new(
        cfg: ReasonerConfig,
        llm_cfg: &llm::LlmConfig,
        store: DynStore,
        redactor: Arc<Redactor>,
        skills: Arc<crate::skills::Library>,
    ) -> Self {
        let router = match llm::Providers::from_config(llm_cfg) {
            Ok(p) => {
                let r = p.router(&llm_cfg.routing);
                (r.route(TaskKind::Narrative).is_some() || r.route(TaskKind::Chat).is_some())
                    .then_some(r)
            }
            Err(error) => {
                warn!(%error, "language model providers not usable; keeping deterministic narratives");
                None
            }
        };
        Self::with_router(cfg, router, store, redactor, skills)
    }

    /// Gives the reasoner retrieval (set once, at start).
    pub fn set_memory(&self, memory: Arc<crate::recall::Memory>) {
        let _ = self.inner.memory.set(memory);
    }

    /// Up to 3 similar past incidents or outcomes of `inc` as prompt
    /// material; none when retrieval is off or unavailable (a narrative
    /// never fails because of it).
    async fn past_for(&self, inc: &Incident) -> Vec<PastIncident> {
        let Some(m) = self.inner.memory.get() else {
            return Vec::new();
        };
        match m.similar(inc, 3).await {
            Ok(hits) => hits.iter().map(PastIncident::from_hit).collect(),
            Err(error) => {
                debug!(%error, incident = %inc.id, "no similar incidents for the prompt");
                Vec::new()
            }
        }
    }

    /// A reasoner over an explicit router (tests, benches).
    pub fn with_router(
        cfg: ReasonerConfig,
        router: Option<Router>,
        store: DynStore,
        redactor: Arc<Redactor>,
        skills: Arc<crate::skills::Library>,
    ) -> Self {
        let queue = JobQueue::new(cfg.queue_capacity, cfg.overflow);
        Self {
            inner: Arc::new(Inner {
                cfg,
                router,
                queue: Mutex::new(queue),
                wake: Notify::new(),
                breakers: Mutex::new(BTreeMap::new()),
                permits: Mutex::new(BTreeMap::new()),
                offered: Mutex::new(BTreeMap::new()),
                store,
                redactor,
                skills,
                memory: std::sync::OnceLock::new(),
                completed: AtomicU64::new(0),
                last_latency_ms: AtomicU64::new(0),
            }),
        }
    }

    /// Whether any model is configured.
    pub fn configured(&self) -> bool {
        self.inner.router.is_some()
    }

    /// Jobs dropped by the overflow policy.
    pub fn dropped(&self) -> u64 {
        lock(&self.inner.queue).dropped()
    }

    /// Jobs waiting.
    pub fn queued(&self) -> usize {
        lock(&self.inner.queue).len()
    }

    /// Narrative jobs finished (stored, whatever the outcome).
    pub fn completed(&self) -> u64 {
        self.inner.completed.load(Ordering::Relaxed)
    }

    /// Queue-to-stored time of the last narrative, ms.
    pub fn last_latency_ms(&self) -> u64 {
        self.inner.last_latency_ms.load(Ordering::Relaxed)
    }

    /// Hands a new or changed incident over; never waits. A narrative is
    /// queued when the incident is new, reopened or escalated (its severity
    /// is above the one last narrated); resolved incidents are forgotten.
    pub fn offer(&self, inc: &Incident) {
        let Some(router) = &self.inner.router else {
            return;
        };
        if router.route(TaskKind::Narrative).is_none() {
            return;
        }
        {
            let mut offered = lock(&self.inner.offered);
            if inc.state == IncidentState::Resolved {
                offered.remove(&inc.id);
                return;
            }
            if offered.get(&inc.id).is_some_and(|s| *s >= inc.severity) {
                return;
            }
            offered.insert(inc.id.clone(), inc.severity);
        }
        let job = Job::Narrative {
            incident: Box::new(inc.clone()),
            queued: Instant::now(),
        };
        let dropped = lock(&self.inner.queue).push(
            Priority::from(inc.severity),
            Some(format!("inc:{}", inc.id)),
            job,
        );
        if let Some(job) = dropped {
            let id = match &job {
                Job::Narrative { incident, .. } => incident.id.clone(),
                Job::Chat { .. } => String::from("chat"),
            };
            if let Job::Narrative { incident, .. } = &job {
                lock(&self.inner.offered).remove(&incident.id);
            }
            warn!(dropped = %id, "reasoner queue full; job dropped");
        }
        self.inner.wake.notify_one();
    }

    fn permit(&self, provider: &str) -> Arc<Semaphore> {
        let mut p = lock(&self.inner.permits);
        p.entry(provider.to_owned())
            .or_insert_with(|| {
                let n = self
                    .inner
                    .cfg
                    .concurrency
                    .get(provider)
                    .copied()
                    .unwrap_or(self.inner.cfg.default_concurrency)
                    .max(1);
                Arc::new(Semaphore::new(n))
            })
            .clone()
    }

    fn breaker_state(&self, provider: &str, now: i64) -> BreakerState {
        lock(&self.inner.breakers)
            .get(provider)
            .map_or(BreakerState::Closed, |b| b.state(now))
    }

    /// `Err((reason, retry_after_secs))` when calls to `provider` are stopped.
    async fn gate(&self, provider: &str, now: i64) -> Result<(), (String, Option<u64>)> {
        if let BreakerState::Open { retry_after_ms } = self.breaker_state(provider, now) {
            let secs = u64::try_from(retry_after_ms.max(0) / 1000 + 1).unwrap_or(1);
            return Err((
                format!(
                    "calls to {provider} are paused for {secs} s: its last calls failed (circuit breaker open)"
                ),
                Some(secs),
            ));
        }
        if let Some(budget) = self.inner.cfg.monthly_token_budget.get(provider) {
            let month = month_of(now);
            let used = match self.inner.store.llm_usage(provider, &month).await {
                Ok(u) => u.tokens_in + u.tokens_out,
                Err(error) => {
                    warn!(%error, provider, "cannot read token usage");
                    0
                }
            };
            if used >= i64::try_from(*budget).unwrap_or(i64::MAX) {
                return Err((
                    format!(
                        "the monthly token budget of {provider} ({budget} tokens) is used up: {used} tokens in {month}; calls resume next month or when [reasoner] monthly_token_budget is raised"
                    ),
                    None,
                ));
            }
        }
        Ok(())
    }

    /// The state shown on pages and in the API.
    pub async fn status(&self) -> AssistantStatus {
        let Some(p) = self.inner.router.as_ref().and_then(|r| {
            r.route(TaskKind::Narrative)
                .or_else(|| r.route(TaskKind::Chat))
        }) else {
            return AssistantStatus {
                provider: None,
                model: None,
                stopped: None,
                breaker: None,
                tokens_this_month: 0,
                monthly_budget: None,
            };
        };
        let now = wingman_agent::now_ms();
        let stopped = self.gate(p.name(), now).await.err().map(|(r, _)| r);
        let used = self
            .inner
            .store
            .llm_usage(p.name(), &month_of(now))
            .await
            .map(|u| u.tokens_in + u.tokens_out)
            .unwrap_or(0);
        AssistantStatus {
            provider: Some(p.name().to_owned()),
            model: Some(p.model().to_owned()),
            stopped,
            breaker: Some(self.breaker_state(p.name(), now)),
            tokens_this_month: used,
            monthly_budget: self.inner.cfg.monthly_token_budget.get(p.name()).copied(),
        }
    }

    async fn record_exchanges(&self, kind: &str, id: &str, exchanges: &[llm::Exchange], ok: bool) {
        let month = month_of(wingman_agent::now_ms());
        let n = exchanges.len();
        for (i, e) in exchanges.iter().enumerate() {
            let outcome = match (&e.error, ok || i + 1 < n) {
                (None, _) => "ok",
                (Some(err), _) if err.starts_with("invalid model output") => "invalid_output",
                _ => "error",
            };
            debug!(provider = %e.provider, attempt = e.attempt, status = ?e.status, latency_ms = e.latency_ms, "model exchange");
            tracing::trace!(request = %e.request_body, response = ?e.response_body, "model exchange bodies");
            let row = ExchangeRow {
                id: 0,
                subject_kind: kind.to_owned(),
                subject_id: id.to_owned(),
                provider: e.provider.clone(),
                model: e.model.clone(),
                task: e.task.as_str().to_owned(),
                attempt: i64::from(e.attempt),
                request_body: e.request_body.clone(),
                response_body: e.response_body.clone(),
                http_status: e.status.map(i64::from),
                tokens_in: clamp_i64(e.prompt_tokens),
                tokens_out: clamp_i64(e.completion_tokens),
                latency_ms: i64::try_from(e.latency_ms).unwrap_or(i64::MAX),
                est_cost_usd: e.est_cost_usd,
                outcome: outcome.to_owned(),
                error: e.error.clone(),
                created_at: e.started_at_ms,
            };
            if let Err(error) = self.inner.store.record_exchange(&row).await {
                warn!(%error, subject = %id, "cannot store model exchange");
            }
            if e.status.is_some()
                && let Err(error) = self
                    .inner
                    .store
                    .add_llm_usage(
                        &e.provider,
                        &month,
                        row.tokens_in.unwrap_or(0),
                        row.tokens_out.unwrap_or(0),
                        e.est_cost_usd.unwrap_or(0.0),
                    )
                    .await
            {
                warn!(%error, "cannot store token usage");
            }
        }
    }

    fn record_breaker(&self, provider: &str, result: Result<(), &LlmError>) {
        // A provider that answers (even with unusable output) is up.
        let ok = match result {
            Ok(()) => true,
            Err(e) => matches!(e, LlmError::InvalidOutput(_) | LlmError::Refused(_)),
        };
        let now = wingman_agent::now_ms();
        let mut b = lock(&self.inner.breakers);
        let br = b.entry(provider.to_owned()).or_insert_with(|| {
            Breaker::new(
                self.inner.cfg.breaker_failures,
                i64::try_from(self.inner.cfg.breaker_cooldown_secs.saturating_mul(1000))
                    .unwrap_or(i64::MAX),
            )
        });
        let before = br.state(now);
        br.record(now, ok);
        if before != BreakerState::Closed && ok {
            info!(provider, "model provider recovered; circuit breaker closed");
        } else if matches!(br.state(now), BreakerState::Open { .. })
            && !matches!(before, BreakerState::Open { .. })
        {
            warn!(provider, "model provider failing; circuit breaker open");
        }
    }

    fn try_breaker(&self, provider: &str) -> Result<(), i64> {
        let now = wingman_agent::now_ms();
        let mut b = lock(&self.inner.breakers);
        match b.get_mut(provider) {
            Some(br) => br.try_call(now),
            None => Ok(()),
        }
    }

    async fn put_narrative(&self, row: ModelNarrativeRow) {
        if let Err(error) = self.inner.store.put_model_narrative(&row).await {
            warn!(%error, incident = %row.incident_id, "cannot store model narrative");
        }
        // Model-written narratives are indexed next to the deterministic one.
        if let (Some(m), "ok", Some(text)) = (
            self.inner.memory.get(),
            row.status.as_str(),
            row.narrative.as_deref(),
        ) {
            let summary = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("summary").and_then(|s| s.as_str()).map(str::to_owned))
                .unwrap_or_else(|| text.to_owned());
            let mut d = crate::memory::Document::new(
                crate::memory::DocKind::Incident,
                &row.incident_id,
                format!("Model narrative of {}", row.incident_id),
                &summary,
                row.created_at,
            );
            d.id = format!("{}#model", d.id);
            let _ = m.indexer.try_index(d);
        }
    }

    async fn templates_for(&self, inc: &Incident) -> Vec<TemplateInput> {
        let mut ids = BTreeSet::new();
        for e in &inc.evidence {
            for r in &e.refs {
                if let crate::engine::EvidenceRef::Template { template_id } = r {
                    ids.insert(*template_id);
                }
            }
        }
        let hosts: BTreeMap<String, String> = self
            .inner
            .store
            .list_agents()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a.id, a.hostname))
            .collect();
        let mut out = Vec::new();
        for id in ids.into_iter().take(20) {
            for r in self
                .inner
                .store
                .template_rows(id)
                .await
                .unwrap_or_default()
                .into_iter()
                .take(5)
            {
                out.push(TemplateInput {
                    node: hosts.get(&r.agent_id).cloned().unwrap_or(r.agent_id),
                    template: r.template,
                    count: u64::try_from(r.count).unwrap_or(0),
                    priority: u8::try_from(r.severity.clamp(0, 7)).unwrap_or(6),
                });
            }
        }
        out
    }

    fn skills_for(&self, inc: &Incident) -> Vec<(String, String)> {
        let detectors: Vec<&str> = inc.detectors.iter().map(|d| d.as_str()).collect();
        let mut text: Vec<&str> = inc.evidence.iter().map(|e| e.summary.as_str()).collect();
        text.push(inc.title.as_str());
        crate::skills::suggest(&self.inner.skills.skills, &detectors, &text, &[])
            .into_iter()
            .take(5)
            .map(|s| (s.id, s.title))
            .collect()
    }

    async fn narrate(&self, inc: Incident, queued: Instant) {
        let Some(provider) = self
            .inner
            .router
            .as_ref()
            .and_then(|r| r.route(TaskKind::Narrative))
        else {
            return;
        };
        let name = provider.name();
        // After a restart the engine hands incidents over again: one that
        // was narrated at this severity or above is not asked about again.
        if let Ok(Some(prev)) = self.inner.store.model_narrative(&inc.id).await
            && matches!(prev.status.as_str(), "ok" | "fallback")
            && severity_rank(&prev.severity) >= severity_rank(inc.severity.as_str())
        {
            debug!(incident = %inc.id, "already narrated at this severity");
            self.done(queued);
            return;
        }
        let base = |status: &str, error: Option<String>, refs: String| ModelNarrativeRow {
            incident_id: inc.id.clone(),
            severity: inc.severity.as_str().to_owned(),
            provider: name.to_owned(),
            model: provider.model().to_owned(),
            status: status.to_owned(),
            narrative: None,
            error,
            refs,
            created_at: wingman_agent::now_ms(),
        };
        if let Err((reason, _)) = self.gate(name, wingman_agent::now_ms()).await {
            info!(incident = %inc.id, provider = name, reason = %reason, "model narrative skipped");
            self.put_narrative(base("skipped", Some(reason), "{}".into()))
                .await;
            self.done(queued);
            return;
        }
        let templates = self.templates_for(&inc).await;
        let skills = self.skills_for(&inc);
        let past = self.past_for(&inc).await;
        let built = match incident_prompt(&self.inner.redactor, &inc, &templates, &skills, &past) {
            Ok(p) => p,
            Err(e) => {
                warn!(incident = %inc.id, error = %e, "narrative prompt refused by the privacy gate");
                self.put_narrative(base(
                    "failed",
                    Some(format!("prompt refused by the privacy gate: {e}")),
                    "{}".into(),
                ))
                .await;
                self.done(queued);
                return;
            }
        };
        let refs = serde_json::to_string(&built.labels).unwrap_or_else(|_| "{}".into());
        let sem = self.permit(name);
        let Ok(_permit) = sem.acquire_owned().await else {
            return;
        };
        let mut attempt = 0;
        let row = loop {
            attempt += 1;
            if let Err(ms) = self.try_breaker(name) {
                break base(
                    "skipped",
                    Some(format!(
                        "calls to {name} are paused for {} s: its last calls failed (circuit breaker open)",
                        ms / 1000 + 1
                    )),
                    refs.clone(),
                );
            }
            let out = llm::narrative::narrate(
                provider.as_ref(),
                PromptRef::from(&built.prompt),
                &built.skill_ids,
            )
            .await;
            self.record_exchanges("incident", &inc.id, &out.exchanges, out.result.is_ok())
                .await;
            self.record_breaker(name, out.result.as_ref().map(|_| ()));
            match out.result {
                Ok(n) => {
                    let mut r = base("ok", None, refs.clone());
                    r.narrative = serde_json::to_string(&n).ok();
                    break r;
                }
                Err(LlmError::InvalidOutput(m)) if attempt == 1 => {
                    info!(incident = %inc.id, provider = name, error = %m, "invalid model narrative; retrying once");
                }
                Err(LlmError::InvalidOutput(m)) => {
                    warn!(incident = %inc.id, provider = name, error = %m, "invalid model narrative twice; keeping the deterministic narrative");
                    break base(
                        "fallback",
                        Some(format!("invalid model output twice, last: {m}")),
                        refs.clone(),
                    );
                }
                Err(e) => {
                    warn!(incident = %inc.id, provider = name, error = %e, "model narrative failed");
                    break base("failed", Some(e.to_string()), refs.clone());
                }
            }
        };
        self.put_narrative(row).await;
        self.done(queued);
    }

    fn done(&self, queued: Instant) {
        let ms = u64::try_from(queued.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.last_latency_ms.store(ms, Ordering::Relaxed);
        self.inner.completed.fetch_add(1, Ordering::Relaxed);
        debug!(latency_ms = ms, "narrative job finished");
    }

    /// Builds the chat prompt from the hub's own data: nodes, open incidents
    /// and skills that match the question.
    async fn chat_prompt(&self, question: &str) -> Result<CloudPrompt, String> {
        let store = &self.inner.store;
        let mut b = PromptBuilder::new(TaskKind::Chat, &self.inner.redactor);
        let now = wingman_agent::now_ms();
        let agents = store.list_agents().await.unwrap_or_default();
        let filter = crate::store::IncidentFilter {
            limit: 50,
            ..Default::default()
        };
        let incidents = store
            .list_incidents(&filter)
            .await
            .map(|(rows, _)| rows)
            .unwrap_or_default();
        let open: Vec<_> = incidents.iter().filter(|r| r.state != "resolved").collect();
        // Always one item, so an empty hub still has a prompt.
        b.fact(&FactLine::new(
            "hub",
            FactKind::Other,
            format!(
                "{} nodes enrolled, {} online; {} open incidents",
                agents.iter().filter(|a| a.revoked_at.is_none()).count(),
                agents.iter().filter(|a| a.online).count(),
                open.len()
            ),
        ));
        for a in agents.iter().take(100) {
            if a.revoked_at.is_some() {
                continue;
            }
            let state = if a.online { "online" } else { "offline" };
            let seen = a.last_seen.map_or_else(
                || "never seen".to_owned(),
                |t| format!("last seen {} s ago", (now - t).max(0) / 1000),
            );
            b.fact(&FactLine::new(
                a.hostname.clone(),
                FactKind::Host,
                format!(
                    "{} node, {state}, {seen}, agent {}",
                    a.kind, a.agent_version
                ),
            ));
        }
        for r in open {
            b.fact(&FactLine::new(
                r.nodes.clone(),
                FactKind::Event,
                format!(
                    "incident {} [{}, {}]: {}",
                    r.id, r.severity, r.state, r.title
                ),
            ));
        }
        let words: Vec<String> = question
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 3)
            .map(str::to_lowercase)
            .collect();
        let mut n = 0;
        for s in &self.inner.skills.skills {
            let hay = format!("{} {} {}", s.id, s.title, s.tags.join(" ")).to_lowercase();
            if n < 5 && words.iter().any(|w| hay.contains(w.as_str())) {
                b.skill(&s.id, &s.title);
                n += 1;
            }
        }
        // What retrieval finds for the question, so answers can cite it.
        if let Some(m) = self.inner.memory.get()
            && let Ok(hits) = m
                .search(question, 5, &crate::memory::Filter::default())
                .await
        {
            for h in &hits {
                let p = &h.payload;
                match p.kind {
                    crate::memory::DocKind::Skill => {
                        b.skill(&p.ref_id, &p.title);
                    }
                    crate::memory::DocKind::Incident | crate::memory::DocKind::Outcome => {
                        b.narrative(&format!(
                            "Retrieved past {} {} ({}): {}",
                            p.kind.as_str(),
                            p.ref_id,
                            p.title,
                            p.text
                        ));
                    }
                    crate::memory::DocKind::TemplateSummary => {}
                }
            }
        }
        b.operator_question(question);
        b.build().map_err(|e| e.to_string())
    }

    /// The routed chat provider, when calls to it are allowed now (budget
    /// and breaker, as [`Self::gate`] decides).
    async fn chat_provider(&self) -> Result<Arc<dyn llm::Provider>, ChatError> {
        let Some(provider) = self
            .inner
            .router
            .as_ref()
            .and_then(|r| r.route(TaskKind::Chat))
        else {
            return Err(ChatError::NoModel);
        };
        match self.gate(provider.name(), wingman_agent::now_ms()).await {
            Err((reason, Some(secs))) => {
                return Err(ChatError::Busy {
                    retry_after_secs: secs,
                    reason,
                });
            }
            Err((reason, None)) => return Err(ChatError::Stopped(reason)),
            Ok(()) => {}
        }
        Ok(provider)
    }

    /// Waits for one of the provider's call slots, then checks its breaker.
    async fn call_slot(&self, name: &str) -> Result<tokio::sync::OwnedSemaphorePermit, ChatError> {
        let Ok(permit) = self.permit(name).acquire_owned().await else {
            return Err(ChatError::NoModel);
        };
        if let Err(ms) = self.try_breaker(name) {
            return Err(ChatError::Busy {
                retry_after_secs: u64::try_from(ms / 1000 + 1).unwrap_or(1),
                reason: "circuit breaker open".into(),
            });
        }
        Ok(permit)
    }

    /// Asks the routed chat model for a remediation plan of `inc`, answered
    /// in [`crate::control::catalog::plan_json_schema`]. The prompt holds the
    /// incident's evidence (privacy-gated like every prompt), the catalog's
    /// action names and the inventory targets on the incident's nodes, as
    /// `targets`. The reply still has to pass plan validation.
    pub async fn propose_plan(
        &self,
        inc: &Incident,
        targets: &[String],
    ) -> Result<serde_json::Value, ChatError> {
        let provider = self.chat_provider().await?;
        let name = provider.name();
        let mut b = PromptBuilder::new(TaskKind::Chat, &self.inner.redactor);
        for e in &inc.evidence {
            let text = format!("{}: {}", e.detector.as_str(), e.summary);
            b.evidence(e.n, "", e.severity.as_str(), u64::from(e.count), &text);
        }
        b.narrative(&inc.narrative);
        for t in targets.iter().take(200) {
            b.fact(&FactLine::new("inventory", FactKind::Other, t.clone()));
        }
        let actions: Vec<String> = crate::control::catalog::CATALOG
            .iter()
            .map(|a| {
                let params: Vec<&str> = a.params.iter().map(|p| p.name).collect();
                format!(
                    "{} ({}; params: {})",
                    a.name,
                    a.risk.as_str(),
                    params.join(", ")
                )
            })
            .collect();
        b.operator_question(&format!(
            "Propose a short remediation plan for incident {}. Use only these actions, with \
             targets from the inventory facts: {}. Use {{\"action\": \"manual\", \"text\": ...}} for \
             anything else. Prefer the least risky action that can fix the cause; never propose \
             destructive actions unless nothing else can work. Answer only with the plan object.",
            inc.id,
            actions.join("; ")
        ));
        let prompt = b
            .build()
            .map_err(|e| ChatError::Stopped(format!("the privacy gate refused the prompt: {e}")))?;
        let _permit = self.call_slot(name).await?;
        let schema = llm::OutputSchema {
            name: "remediation_plan".to_owned(),
            description: "A remediation plan of catalog actions and manual steps".to_owned(),
            schema: crate::control::catalog::plan_json_schema(),
        };
        let out = provider.complete(PromptRef::from(&prompt), &schema).await;
        let ok = out.result.is_ok();
        self.record_exchanges("incident", &inc.id, &out.exchanges, ok)
            .await;
        self.record_breaker(name, out.result.as_ref().map(|_| ()));
        out.result.map(|c| c.value).map_err(|e| ChatError::Busy {
            retry_after_secs: 10,
            reason: e.to_string(),
        })
    }

    /// Asks the routed chat model; waits at most `chat_timeout_secs`.
    pub async fn ask(&self, chat_id: &str, question: &str) -> Result<ChatAnswer, ChatError> {
        self.chat_provider().await?;
        let prompt = self
            .chat_prompt(question)
            .await
            .map_err(|e| ChatError::Stopped(format!("the privacy gate refused the prompt: {e}")))?;
        let (tx, rx) = oneshot::channel();
        let job = Job::Chat {
            chat_id: chat_id.to_owned(),
            prompt: Box::new(prompt),
            reply: tx,
        };
        if lock(&self.inner.queue)
            .push(Priority::Chat, None, job)
            .is_some()
        {
            return Err(ChatError::Busy {
                retry_after_secs: 5,
                reason: "the model queue is full".into(),
            });
        }
        self.inner.wake.notify_one();
        let wait = Duration::from_secs(self.inner.cfg.chat_timeout_secs.max(1));
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            _ => Err(ChatError::Busy {
                retry_after_secs: 10,
                reason: "the model did not answer in time".into(),
            }),
        }
    }

    async fn chat(&self, chat_id: &str, prompt: &CloudPrompt) -> Result<ChatAnswer, ChatError> {
        let Some(provider) = self
            .inner
            .router
            .as_ref()
            .and_then(|r| r.route(TaskKind::Chat))
        else {
            return Err(ChatError::NoModel);
        };
        let name = provider.name();
        let _permit = self.call_slot(name).await?;
        let out = provider
            .complete(PromptRef::from(prompt), &chat_schema())
            .await;
        let result = out.result.and_then(|c| parse_chat(&c.value, prompt.refs()));
        self.record_exchanges("chat", chat_id, &out.exchanges, result.is_ok())
            .await;
        self.record_breaker(name, result.as_ref().map(|_| ()));
        result
            .map(|answer| ChatAnswer {
                answer,
                provider: name.to_owned(),
                model: provider.model().to_owned(),
            })
            .map_err(|e| ChatError::Busy {
                retry_after_secs: 10,
                reason: e.to_string(),
            })
    }

    async fn work(&self, shutdown: CancellationToken) {
        loop {
            let job = lock(&self.inner.queue).pop();
            let Some(job) = job else {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = self.inner.wake.notified() => continue,
                }
            };
            match job {
                Job::Narrative { incident, queued } => {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = self.narrate(*incident, queued) => {}
                    }
                }
                Job::Chat {
                    chat_id,
                    prompt,
                    reply,
                } => {
                    let r = tokio::select! {
                        () = shutdown.cancelled() => return,
                        r = self.chat(&chat_id, &prompt) => r,
                    };
                    let _ = reply.send(r);
                }
            }
        }
    }

    /// Runs the workers until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if !self.configured() {
            return;
        }
        let workers = self.inner.cfg.workers.max(1);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let me = self.clone();
            let s = shutdown.clone();
            set.spawn(async move { me.work(s).await });
        }
        while set.join_next().await.is_some() {}
    }
}

/// The chat answer schema: `{answer, refs}`.
pub fn chat_schema() -> llm::OutputSchema {
    llm::OutputSchema {
        name: "chat_answer".to_owned(),
        description: "Answer to the operator's question, citing data refs".to_owned(),
        schema: serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["answer", "refs"],
            "properties": {
                "answer": {"type": "string"},
                "refs": {"type": "array", "items": {"type": "string"}}
            }
        }),
    }
}

fn parse_chat(v: &serde_json::Value, refs: &BTreeSet<String>) -> Result<String, LlmError> {
    llm::schema::validate(&chat_schema().schema, v).map_err(LlmError::InvalidOutput)?;
    let answer = v["answer"].as_str().unwrap_or_default();
    if answer.trim().is_empty() || answer.chars().count() > 8000 {
        return Err(LlmError::InvalidOutput("answer empty or too long".into()));
    }
    if let Some(bad) = v["refs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str())
        .find(|r| !refs.contains(*r))
    {
        return Err(LlmError::InvalidOutput(format!(
            "answer cites {:?}, which is not in the prompt",
            bad.chars().take(40).collect::<String>()
        )));
    }
    Ok(answer.to_owned())
}

/// A stored model narrative as pages and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct NarrativeView {
    /// `ok`, `fallback`, `failed` or `skipped`.
    pub status: String,
    /// Provider.
    pub provider: String,
    /// Model.
    pub model: String,
    /// The validated narrative when `ok`.
    pub narrative: Option<IncidentNarrative>,
    /// Why there is none.
    pub error: Option<String>,
    /// Ref id → label of the data items the model was given.
    pub refs: BTreeMap<String, String>,
    /// Unix ms.
    pub created_at: i64,
}

impl From<&ModelNarrativeRow> for NarrativeView {
    fn from(r: &ModelNarrativeRow) -> Self {
        Self {
            status: r.status.clone(),
            provider: r.provider.clone(),
            model: r.model.clone(),
            narrative: r
                .narrative
                .as_deref()
                .and_then(|n| serde_json::from_str(n).ok()),
            error: r.error.clone(),
            refs: serde_json::from_str(&r.refs).unwrap_or_default(),
            created_at: r.created_at,
        }
    }
}

/// The in-page link of a cited ref: evidence `E<n>` → `#E<n>`, other data
/// items → `#ref-<id>` in the "What the model saw" section.
pub fn ref_anchor(r: &str) -> String {
    let safe: String = r
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    if safe.starts_with('E') {
        format!("#{safe}")
    } else {
        format!("#ref-{safe}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_orders_and_overflows_by_policy() {
        let mut q = JobQueue::new(2, Overflow::EvictLowest);
        assert!(q.push(Priority::Info, None, "i1").is_none());
        assert!(q.push(Priority::Critical, None, "c1").is_none());
        // Full: a warning evicts the info job.
        assert_eq!(q.push(Priority::Warning, None, "w1"), Some("i1"));
        // Full: another info is refused.
        assert_eq!(q.push(Priority::Info, None, "i2"), Some("i2"));
        // Chat evicts the warning.
        assert_eq!(q.push(Priority::Chat, None, "chat"), Some("w1"));
        assert_eq!(q.pop(), Some("chat"));
        assert_eq!(q.pop(), Some("c1"));
        assert_eq!(q.pop(), None);
        assert_eq!(q.dropped(), 3);
        let mut q = JobQueue::new(1, Overflow::DropNewest);
        q.push(Priority::Info, None, "a");
        assert_eq!(q.push(Priority::Chat, None, "b"), Some("b"));
        // Same key replaces.
        let mut q = JobQueue::new(4, Overflow::EvictLowest);
        q.push(Priority::Warning, Some("inc-1".into()), "old");
        q.push(Priority::Critical, Some("inc-1".into()), "new");
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop(), Some("new"));
    }

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let mut b = Breaker::new(3, 1000);
        for _ in 0..2 {
            assert!(b.try_call(0).is_ok());
            b.record(0, false);
        }
        assert_eq!(b.state(0), BreakerState::Closed);
        b.record(0, false);
        assert_eq!(
            b.state(10),
            BreakerState::Open {
                retry_after_ms: 990
            }
        );
        assert_eq!(b.try_call(500), Err(500));
        assert!(b.try_call(1000).is_ok(), "one probe");
        assert!(b.try_call(1001).is_err(), "only one probe");
        b.record(1002, false);
        assert!(matches!(b.state(1003), BreakerState::Open { .. }));
        assert!(b.try_call(2002).is_ok());
        b.record(2003, true);
        assert_eq!(b.state(2004), BreakerState::Closed);
    }

    #[test]
    fn month_and_anchor() {
        assert_eq!(month_of(0), "1970-01");
        assert_eq!(month_of(1_764_000_000_000), "2025-11");
        assert_eq!(ref_anchor("E12"), "#E12");
        assert_eq!(ref_anchor("T1\"><script>"), "#ref-T1script");
    }
}
