//! The SQLite and PostgreSQL backends. Both run the same SQL text (numbered
//! `$N` parameters, `ON CONFLICT`, `RETURNING` work in both), so the
//! implementation is written once in [`impl_store!`] and instantiated per
//! backend; only connection setup and the migration files differ.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr};

use super::{
    AgentRow, ApiKeyRow, AuditRow, ChatMessageRow, ExchangeRow, FactRecord, GapAccounting,
    IncidentFilter, IncidentRow, IngestItem, IngestOutcome, LatestFact, ModelNarrativeRow,
    NewToken, PlanRow, PruneCounts, PruneCutoffs, PveNotificationRow, SessionRow, SettingRow,
    SkillRunRow, Store, StoreError, StoreResult, TemplateRecord, TemplateRow, TokenUse, UsageRow,
    UserRow, VectorRow,
};

fn migrator(files: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|(v, desc, sql)| {
                Migration::new(
                    *v,
                    Cow::Borrowed(*desc),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "log templates",
        include_str!("../../../migrations/sqlite/0002_log_templates.sql"),
    ),
    (
        3,
        "incidents",
        include_str!("../../../migrations/sqlite/0003_incidents.sql"),
    ),
    (
        4,
        "settings, retention, webhooks",
        include_str!("../../../migrations/sqlite/0004_settings_retention_webhooks.sql"),
    ),
    (
        5,
        "memory",
        include_str!("../../../migrations/sqlite/0005_memory.sql"),
    ),
    (
        6,
        "llm exchanges, narratives, usage, chat, skill runs",
        include_str!("../../../migrations/sqlite/0006_llm.sql"),
    ),
    (
        7,
        "audit log",
        include_str!("../../../migrations/sqlite/0007_audit.sql"),
    ),
    (
        8,
        "plans",
        include_str!("../../../migrations/sqlite/0008_plans.sql"),
    ),
];

const PG_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "log templates",
        include_str!("../../../migrations/postgres/0002_log_templates.sql"),
    ),
    (
        3,
        "incidents",
        include_str!("../../../migrations/postgres/0003_incidents.sql"),
    ),
    (
        4,
        "settings, retention, webhooks",
        include_str!("../../../migrations/postgres/0004_settings_retention_webhooks.sql"),
    ),
    (
        5,
        "memory",
        include_str!("../../../migrations/postgres/0005_memory.sql"),
    ),
    (
        6,
        "llm exchanges, narratives, usage, chat, skill runs",
        include_str!("../../../migrations/postgres/0006_llm.sql"),
    ),
    (
        7,
        "audit log",
        include_str!("../../../migrations/postgres/0007_audit.sql"),
    ),
    (
        8,
        "plans",
        include_str!("../../../migrations/postgres/0008_plans.sql"),
    ),
];

/// The embedded SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://PATH`).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        Ok(Self { pool })
    }
}

/// The PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://...`).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Self { pool })
    }
}

fn agent_from_row<R: Row>(r: &R) -> StoreResult<AgentRow>
where
    usize: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(AgentRow {
        id: r.try_get(0)?,
        hostname: r.try_get(1)?,
        kind: r.try_get(2)?,
        agent_version: r.try_get(3)?,
        enrolled_at: r.try_get(4)?,
        revoked_at: r.try_get(5)?,
        last_seen: r.try_get(6)?,
        online: r.try_get(7)?,
        cert_not_after: r.try_get(8)?,
    })
}

fn user_from_row<R: Row>(r: &R, off: usize) -> StoreResult<UserRow>
where
    usize: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(UserRow {
        id: r.try_get(off)?,
        name: r.try_get(off + 1)?,
        password_hash: r.try_get(off + 2)?,
        role: r.try_get(off + 3)?,
        must_change_password: r.try_get(off + 4)?,
    })
}

const TEMPLATE_COLS: &str = "agent_id, source_kind, source_name, template_id, template, severity, count, bursts, first_seen, last_seen";

fn template_from_row<R: Row>(r: &R) -> StoreResult<TemplateRow>
where
    usize: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(TemplateRow {
        agent_id: r.try_get(0)?,
        source_kind: r.try_get(1)?,
        source_name: r.try_get(2)?,
        template_id: (r.try_get::<i64, _>(3)? as u64).to_string(),
        template: r.try_get(4)?,
        severity: r.try_get(5)?,
        count: r.try_get(6)?,
        bursts: r.try_get(7)?,
        first_seen: r.try_get(8)?,
        last_seen: r.try_get(9)?,
    })
}

const INCIDENT_COLS: &str =
    "id, fingerprint, state, severity, title, nodes, opened_at, updated_at, resolved_at, body";

fn incident_from_row<R: Row>(r: &R) -> StoreResult<IncidentRow>
where
    usize: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(IncidentRow {
        id: r.try_get(0)?,
        fingerprint: r.try_get(1)?,
        state: r.try_get(2)?,
        severity: r.try_get(3)?,
        title: r.try_get(4)?,
        nodes: r.try_get(5)?,
        opened_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
        resolved_at: r.try_get(8)?,
        body: r.try_get(9)?,
    })
}

const AGENT_COLS: &str =
    "id, hostname, kind, agent_version, enrolled_at, revoked_at, last_seen, online, cert_not_after";
const USER_COLS: &str = "u.id, u.name, u.password_hash, u.role, u.must_change_password";

const PLAN_COLS: &str = "id, incident_id, source, status, created_by, run, created_at, updated_at";

fn plan_from_row<R: Row>(r: &R) -> StoreResult<PlanRow>
where
    usize: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(PlanRow {
        id: r.try_get(0)?,
        incident_id: r.try_get(1)?,
        source: r.try_get(2)?,
        status: r.try_get(3)?,
        created_by: r.try_get(4)?,
        run: r.try_get(5)?,
        created_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
    })
}

macro_rules! impl_store {
    ($ty:ty, $backend:literal, $migrations:expr, $db:ty, $begin:literal) => {
        #[async_trait]
        impl Store for $ty {
            async fn migrate(&self) -> StoreResult<()> {
                migrator($migrations)
                    .run(&self.pool)
                    .await
                    .map_err(|e| StoreError::Migrate(e.to_string()))
            }

            fn backend(&self) -> &'static str {
                $backend
            }

            async fn create_enrollment_token(&self, t: &NewToken) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO enrollment_tokens (id, secret_hash, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(&t.id)
                .bind(&t.secret_hash)
                .bind(t.created_at)
                .bind(t.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn consume_enrollment_token(
                &self,
                id: &str,
                secret_hash: &str,
                used_by: &str,
                now: i64,
            ) -> StoreResult<TokenUse> {
                let consumed = sqlx::query(
                    "UPDATE enrollment_tokens SET used_at = $1, used_by = $2 \
                     WHERE id = $3 AND secret_hash = $4 AND used_at IS NULL AND expires_at > $1 RETURNING id",
                )
                .bind(now)
                .bind(used_by)
                .bind(id)
                .bind(secret_hash)
                .fetch_optional(&self.pool)
                .await?;
                if consumed.is_some() {
                    return Ok(TokenUse::Consumed);
                }
                let row = sqlx::query(
                    "SELECT secret_hash, used_at, expires_at FROM enrollment_tokens WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else {
                    return Ok(TokenUse::Unknown);
                };
                let hash: String = row.try_get(0)?;
                let used_at: Option<i64> = row.try_get(1)?;
                let expires_at: i64 = row.try_get(2)?;
                Ok(if hash != secret_hash {
                    TokenUse::Unknown
                } else if used_at.is_some() {
                    TokenUse::Used
                } else if expires_at <= now {
                    TokenUse::Expired
                } else {
                    TokenUse::Unknown
                })
            }

            async fn create_agent(&self, a: &AgentRow, fp: &str) -> StoreResult<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                sqlx::query(
                    "INSERT INTO agents (id, hostname, kind, agent_version, enrolled_at, revoked_at, last_seen, online, cert_not_after) \
                     VALUES ($1, $2, $3, $4, $5, NULL, NULL, FALSE, $6)",
                )
                .bind(&a.id)
                .bind(&a.hostname)
                .bind(&a.kind)
                .bind(&a.agent_version)
                .bind(a.enrolled_at)
                .bind(a.cert_not_after)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO certificates (fingerprint, agent_id, issued_at, not_after) VALUES ($1, $2, $3, $4)",
                )
                .bind(fp)
                .bind(&a.id)
                .bind(a.enrolled_at)
                .bind(a.cert_not_after)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn add_certificate(
                &self,
                agent_id: &str,
                fp: &str,
                issued_at: i64,
                not_after: i64,
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                sqlx::query(
                    "INSERT INTO certificates (fingerprint, agent_id, issued_at, not_after) VALUES ($1, $2, $3, $4)",
                )
                .bind(fp)
                .bind(agent_id)
                .bind(issued_at)
                .bind(not_after)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE agents SET cert_not_after = $1 WHERE id = $2")
                    .bind(not_after)
                    .bind(agent_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn active_certificates(&self, now: i64) -> StoreResult<Vec<(String, String)>> {
                let rows = sqlx::query(
                    "SELECT c.fingerprint, c.agent_id FROM certificates c JOIN agents a ON a.id = c.agent_id \
                     WHERE a.revoked_at IS NULL AND c.not_after > $1",
                )
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect()
            }

            async fn revoke_agent(&self, id: &str, now: i64) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE agents SET revoked_at = $1, online = FALSE WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn revoked_agents(&self) -> StoreResult<Vec<String>> {
                let rows = sqlx::query("SELECT id FROM agents WHERE revoked_at IS NOT NULL")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
            }

            async fn list_agents(&self) -> StoreResult<Vec<AgentRow>> {
                let q = format!("SELECT {AGENT_COLS} FROM agents ORDER BY hostname, id");
                let rows = sqlx::query(sqlx::AssertSqlSafe(q)).fetch_all(&self.pool).await?;
                rows.iter().map(agent_from_row).collect()
            }

            async fn get_agent(&self, id: &str) -> StoreResult<Option<AgentRow>> {
                let q = format!("SELECT {AGENT_COLS} FROM agents WHERE id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(agent_from_row).transpose()
            }

            async fn agent_connected(
                &self,
                id: &str,
                hostname: &str,
                kind: &str,
                agent_version: &str,
                now: i64,
            ) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE agents SET hostname = $1, kind = $2, agent_version = $3 WHERE id = $4",
                )
                .bind(hostname)
                .bind(kind)
                .bind(agent_version)
                .bind(id)
                .execute(&self.pool)
                .await?;
                // Marking it seen (and online, with the transition recorded) is
                // exactly what a heartbeat does.
                self.touch_agent(id, now).await
            }

            async fn touch_agent(&self, id: &str, now: i64) -> StoreResult<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                sqlx::query("UPDATE agents SET last_seen = $1 WHERE id = $2")
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let flipped = sqlx::query(
                    "UPDATE agents SET online = TRUE WHERE id = $1 AND online = FALSE AND revoked_at IS NULL RETURNING id",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                if flipped.is_some() {
                    sqlx::query("INSERT INTO presence_events (agent_id, online, at) VALUES ($1, TRUE, $2)")
                        .bind(id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn mark_stale_offline(&self, cutoff: i64, now: i64) -> StoreResult<Vec<String>> {
                let mut tx = self.pool.begin_with($begin).await?;
                let rows = sqlx::query(
                    "UPDATE agents SET online = FALSE WHERE online = TRUE AND (last_seen IS NULL OR last_seen < $1) RETURNING id",
                )
                .bind(cutoff)
                .fetch_all(&mut *tx)
                .await?;
                let mut ids = Vec::with_capacity(rows.len());
                for r in &rows {
                    let id: String = r.try_get(0)?;
                    sqlx::query("INSERT INTO presence_events (agent_id, online, at) VALUES ($1, FALSE, $2)")
                        .bind(&id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    ids.push(id);
                }
                tx.commit().await?;
                Ok(ids)
            }

            async fn presence_events(&self, agent_id: &str, limit: i64) -> StoreResult<Vec<(bool, i64)>> {
                let rows = sqlx::query(
                    "SELECT online, at FROM presence_events WHERE agent_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
                )
                .bind(agent_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
            }

            async fn committed_seq(&self, agent_id: &str, stream_id: u64) -> StoreResult<u64> {
                let row = sqlx::query(
                    "SELECT committed_seq FROM streams WHERE agent_id = $1 AND stream_id = $2",
                )
                .bind(agent_id)
                .bind(stream_id as i64)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    None => Ok(0),
                    Some(r) => Ok(r.try_get::<i64, _>(0)? as u64),
                }
            }

            async fn ingest_batch(
                &self,
                agent_id: &str,
                stream_id: u64,
                seq: u64,
                facts: &[FactRecord],
                templates: &[TemplateRecord],
                now: i64,
            ) -> StoreResult<IngestOutcome> {
                let item = IngestItem {
                    agent_id: agent_id.to_string(),
                    stream_id,
                    seq,
                    facts: facts.to_vec(),
                    templates: templates.to_vec(),
                };
                let mut out = self.ingest_batches(std::slice::from_ref(&item), now).await?;
                out.pop().ok_or_else(|| StoreError::Backend("no ingest outcome".into()))
            }

            async fn ingest_batches(
                &self,
                items: &[IngestItem],
                now: i64,
            ) -> StoreResult<Vec<IngestOutcome>> {
                let mut tx = self.pool.begin_with($begin).await?;
                // Committed seqs of the streams in this group, updated as we go so
                // two batches of one stream in one group are judged in order.
                let mut committed: std::collections::HashMap<(String, u64), i64> =
                    std::collections::HashMap::new();
                let mut outcomes = Vec::with_capacity(items.len());
                let mut fact_rows: Vec<FactRow<'_>> = Vec::new();
                let mut latest: std::collections::BTreeMap<(&str, &str), &FactRecord> =
                    std::collections::BTreeMap::new();
                let mut tmpl: std::collections::BTreeMap<(&str, &str, &str, u64), TemplateRecord> =
                    std::collections::BTreeMap::new();
                let mut advanced: std::collections::BTreeMap<(String, u64), i64> =
                    std::collections::BTreeMap::new();
                for it in items {
                    let stream = it.stream_id as i64;
                    let seq_i = i64::try_from(it.seq)
                        .map_err(|_| StoreError::Backend("sequence number out of range".into()))?;
                    let key = (it.agent_id.clone(), it.stream_id);
                    let done = match committed.get(&key) {
                        Some(c) => *c,
                        None => {
                            let c: Option<i64> = sqlx::query(
                                "SELECT committed_seq FROM streams WHERE agent_id = $1 AND stream_id = $2",
                            )
                            .bind(&it.agent_id)
                            .bind(stream)
                            .fetch_optional(&mut *tx)
                            .await?
                            .map(|r| r.try_get(0))
                            .transpose()?;
                            let c = c.unwrap_or(0);
                            committed.insert(key.clone(), c);
                            c
                        }
                    };
                    if it.seq != 0 && seq_i <= done {
                        outcomes.push(IngestOutcome { committed_seq: done as u64, duplicate: true });
                        continue;
                    }
                    for f in it.facts.iter().filter(|f| f.latest) {
                        let k = (it.agent_id.as_str(), f.kind.as_str());
                        if latest.get(&k).is_none_or(|old| old.observed_at <= f.observed_at) {
                            latest.insert(k, f);
                        }
                    }
                    if it.seq == 0 {
                        // Unsequenced batch: only the current state moves.
                        outcomes.push(IngestOutcome { committed_seq: 0, duplicate: false });
                        continue;
                    }
                    for (idx, f) in it.facts.iter().enumerate() {
                        fact_rows.push((it.agent_id.as_str(), stream, seq_i, idx as i64, f));
                    }
                    for t in &it.templates {
                        let k = (it.agent_id.as_str(), t.source_kind.as_str(), t.source_name.as_str(), t.template_id);
                        match tmpl.get_mut(&k) {
                            Some(m) => {
                                m.count += t.count;
                                m.burst |= t.burst;
                                m.template.clone_from(&t.template);
                                m.severity = m.severity.min(t.severity);
                                m.first_seen = m.first_seen.min(t.first_seen);
                                m.last_seen = m.last_seen.max(t.last_seen);
                            }
                            None => {
                                tmpl.insert(k, t.clone());
                            }
                        }
                    }
                    committed.insert(key.clone(), seq_i);
                    advanced.insert(key, seq_i);
                    outcomes.push(IngestOutcome { committed_seq: it.seq, duplicate: false });
                }
                <$ty>::insert_facts(&mut tx, &fact_rows, now).await?;
                let latest: Vec<_> = latest.into_iter().collect();
                for chunk in latest.chunks(500) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO latest_facts (agent_id, kind, observed_at, body) ",
                    );
                    qb.push_values(chunk, |mut b, ((agent, kind), f)| {
                        b.push_bind(*agent)
                            .push_bind(*kind)
                            .push_bind(f.observed_at)
                            .push_bind(f.body.as_str());
                    });
                    qb.push(
                        " ON CONFLICT (agent_id, kind) DO UPDATE SET observed_at = excluded.observed_at, body = excluded.body \
                         WHERE excluded.observed_at >= latest_facts.observed_at",
                    );
                    qb.build().execute(&mut *tx).await?;
                }
                let tmpl: Vec<_> = tmpl.into_iter().collect();
                for chunk in tmpl.chunks(500) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO log_templates (agent_id, source_kind, source_name, template_id, template, severity, count, bursts, first_seen, last_seen) ",
                    );
                    qb.push_values(chunk, |mut b, ((agent, _, _, _), t)| {
                        b.push_bind(*agent)
                            .push_bind(t.source_kind.as_str())
                            .push_bind(t.source_name.as_str())
                            .push_bind(t.template_id as i64)
                            .push_bind(t.template.as_str())
                            .push_bind(t.severity)
                            .push_bind(t.count)
                            .push_bind(i64::from(t.burst))
                            .push_bind(t.first_seen)
                            .push_bind(t.last_seen);
                    });
                    qb.push(
                        " ON CONFLICT (agent_id, source_kind, source_name, template_id) DO UPDATE SET \
                         count = log_templates.count + excluded.count, \
                         bursts = log_templates.bursts + excluded.bursts, \
                         template = excluded.template, \
                         severity = CASE WHEN excluded.severity < log_templates.severity THEN excluded.severity ELSE log_templates.severity END, \
                         first_seen = CASE WHEN excluded.first_seen < log_templates.first_seen THEN excluded.first_seen ELSE log_templates.first_seen END, \
                         last_seen = CASE WHEN excluded.last_seen > log_templates.last_seen THEN excluded.last_seen ELSE log_templates.last_seen END",
                    );
                    qb.build().execute(&mut *tx).await?;
                }
                for ((agent, stream), seq) in &advanced {
                    sqlx::query(
                        "INSERT INTO streams (agent_id, stream_id, committed_seq, updated_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (agent_id, stream_id) DO UPDATE SET \
                         committed_seq = CASE WHEN excluded.committed_seq > streams.committed_seq THEN excluded.committed_seq ELSE streams.committed_seq END, \
                         updated_at = excluded.updated_at",
                    )
                    .bind(agent)
                    .bind(*stream as i64)
                    .bind(*seq)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(outcomes)
            }

            async fn latest_facts(&self, agent_id: &str) -> StoreResult<Vec<LatestFact>> {
                let rows = sqlx::query(
                    "SELECT kind, observed_at, body FROM latest_facts WHERE agent_id = $1 ORDER BY kind",
                )
                .bind(agent_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(LatestFact {
                            kind: r.try_get(0)?,
                            observed_at: r.try_get(1)?,
                            body: r.try_get(2)?,
                        })
                    })
                    .collect()
            }

            async fn log_templates(&self, agent_id: &str, limit: i64) -> StoreResult<Vec<TemplateRow>> {
                let q = format!("SELECT {TEMPLATE_COLS} FROM log_templates WHERE agent_id = $1 ORDER BY last_seen DESC, count DESC LIMIT $2");
                let rows = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(agent_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(template_from_row).collect()
            }

            async fn template_rows(&self, template_id: u64) -> StoreResult<Vec<TemplateRow>> {
                let q = format!("SELECT {TEMPLATE_COLS} FROM log_templates WHERE template_id = $1 ORDER BY agent_id, source_kind, source_name");
                let rows = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(template_id as i64)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(template_from_row).collect()
            }

            async fn recent_facts(&self, agent_id: &str, kind: &str, limit: i64) -> StoreResult<Vec<(i64, String)>> {
                let rows = sqlx::query(
                    "SELECT observed_at, body FROM facts WHERE agent_id = $1 AND kind = $2 ORDER BY observed_at DESC, id DESC LIMIT $3",
                )
                .bind(agent_id)
                .bind(kind)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
            }

            async fn gap_accounting(&self, agent_id: &str) -> StoreResult<GapAccounting> {
                let rows = sqlx::query("SELECT body FROM facts WHERE agent_id = $1 AND kind = 'gap'")
                    .bind(agent_id)
                    .fetch_all(&self.pool)
                    .await?;
                let mut seen = std::collections::BTreeSet::new();
                let mut acc = GapAccounting::default();
                for r in &rows {
                    let body: String = r.try_get(0)?;
                    let Ok(g) = serde_json::from_str::<wingman_protocol::facts::Gap>(&body) else {
                        continue;
                    };
                    if !seen.insert((g.stream_id, g.from_seq, g.to_seq)) {
                        acc.duplicate_reports += 1;
                        continue;
                    }
                    let (Ok(from), Ok(to)) = (i64::try_from(g.from_seq), i64::try_from(g.to_seq)) else {
                        continue;
                    };
                    // Batches sent and committed, then lost from the spool before
                    // the ack arrived, are in the store after all.
                    let got = sqlx::query(
                        "SELECT COUNT(*), COUNT(DISTINCT seq) FROM facts \
                         WHERE agent_id = $1 AND stream_id = $2 AND seq >= $3 AND seq <= $4 AND kind <> 'gap'",
                    )
                    .bind(agent_id)
                    .bind(g.stream_id as i64)
                    .bind(from)
                    .bind(to)
                    .fetch_one(&self.pool)
                    .await?;
                    let facts_in: i64 = got.try_get(0)?;
                    let batches_in: i64 = got.try_get(1)?;
                    acc.reports += 1;
                    acc.reported_facts += g.facts;
                    acc.lost_facts += g.facts.saturating_sub(facts_in.max(0) as u64);
                    acc.lost_batches += g.batches.saturating_sub(batches_in.max(0) as u64);
                }
                Ok(acc)
            }

            async fn fact_count(&self, agent_id: &str) -> StoreResult<i64> {
                let r = sqlx::query("SELECT COUNT(*) FROM facts WHERE agent_id = $1")
                    .bind(agent_id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(r.try_get(0)?)
            }

            async fn upsert_incident(&self, i: &IncidentRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO incidents (id, fingerprint, state, severity, title, nodes, opened_at, updated_at, resolved_at, body) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint, state = excluded.state, \
                     severity = excluded.severity, title = excluded.title, nodes = excluded.nodes, \
                     updated_at = excluded.updated_at, resolved_at = excluded.resolved_at, body = excluded.body",
                )
                .bind(&i.id)
                .bind(&i.fingerprint)
                .bind(&i.state)
                .bind(&i.severity)
                .bind(&i.title)
                .bind(&i.nodes)
                .bind(i.opened_at)
                .bind(i.updated_at)
                .bind(i.resolved_at)
                .bind(&i.body)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_incidents(&self, f: &IncidentFilter) -> StoreResult<(Vec<IncidentRow>, i64)> {
                let node_like = f.node.as_ref().map(|n| format!("%{n}%"));
                let cond = "($1 IS NULL OR state = $1) AND ($2 IS NULL OR severity = $2) AND ($3 IS NULL OR nodes LIKE $3)";
                // The total comes from the same statement as the page (one
                // snapshot), so an incident inserted in between cannot make
                // the total disagree with the rows.
                let q = format!("SELECT {INCIDENT_COLS}, COUNT(*) OVER () FROM incidents WHERE {cond} ORDER BY updated_at DESC, id DESC LIMIT $4 OFFSET $5");
                let rows = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(f.state.as_deref())
                    .bind(f.severity.as_deref())
                    .bind(node_like.as_deref())
                    .bind(f.limit)
                    .bind(f.offset)
                    .fetch_all(&self.pool)
                    .await?;
                let total: i64 = match rows.first() {
                    Some(r) => r.try_get(INCIDENT_COLS.split(',').count())?,
                    None if f.offset == 0 => 0,
                    // A page past the end: count separately.
                    None => sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM incidents WHERE {cond}")))
                        .bind(f.state.as_deref())
                        .bind(f.severity.as_deref())
                        .bind(node_like.as_deref())
                        .fetch_one(&self.pool)
                        .await?
                        .try_get(0)?,
                };
                let rows: StoreResult<Vec<IncidentRow>> = rows.iter().map(incident_from_row).collect();
                Ok((rows?, total))
            }

            async fn get_incident(&self, id: &str) -> StoreResult<Option<IncidentRow>> {
                let q = format!("SELECT {INCIDENT_COLS} FROM incidents WHERE id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(incident_from_row).transpose()
            }

            async fn live_incidents(&self, resolved_since: i64) -> StoreResult<Vec<IncidentRow>> {
                let q = format!(
                    "SELECT {INCIDENT_COLS} FROM incidents WHERE state <> 'resolved' OR resolved_at >= $1 ORDER BY opened_at, id"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(resolved_since)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(incident_from_row).collect()
            }

            async fn create_user(&self, u: &UserRow, now: i64) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO users (id, name, password_hash, role, must_change_password, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&u.id)
                .bind(&u.name)
                .bind(&u.password_hash)
                .bind(&u.role)
                .bind(u.must_change_password)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn set_password(&self, user_id: &str, hash: &str, must_change: bool) -> StoreResult<()> {
                let r = sqlx::query(
                    "UPDATE users SET password_hash = $1, must_change_password = $2 WHERE id = $3",
                )
                .bind(hash)
                .bind(must_change)
                .bind(user_id)
                .execute(&self.pool)
                .await?;
                if r.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn user_by_name(&self, name: &str) -> StoreResult<Option<UserRow>> {
                let q = format!("SELECT {USER_COLS} FROM users u WHERE u.name = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(|r| user_from_row(r, 0)).transpose()
            }

            async fn user_count(&self) -> StoreResult<i64> {
                let r = sqlx::query("SELECT COUNT(*) FROM users")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(r.try_get(0)?)
            }

            async fn create_session(&self, s: &SessionRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, last_seen, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&s.id_hash)
                .bind(&s.user_id)
                .bind(&s.csrf_token)
                .bind(s.created_at)
                .bind(s.last_seen)
                .bind(s.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn session(&self, id_hash: &str, now: i64) -> StoreResult<Option<(SessionRow, UserRow)>> {
                let q = format!(
                    "SELECT s.id_hash, s.user_id, s.csrf_token, s.created_at, s.last_seen, s.expires_at, {USER_COLS} \
                     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1 AND s.expires_at > $2"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(id_hash)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(r) = row else { return Ok(None) };
                let s = SessionRow {
                    id_hash: r.try_get(0)?,
                    user_id: r.try_get(1)?,
                    csrf_token: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                    last_seen: r.try_get(4)?,
                    expires_at: r.try_get(5)?,
                };
                Ok(Some((s, user_from_row(&r, 6)?)))
            }

            async fn touch_session(&self, id_hash: &str, now: i64) -> StoreResult<()> {
                sqlx::query("UPDATE sessions SET last_seen = $1 WHERE id_hash = $2")
                    .bind(now)
                    .bind(id_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
                sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
                    .bind(id_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn create_api_key(&self, k: &ApiKeyRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO api_keys (id, name, key_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&k.id)
                .bind(&k.name)
                .bind(&k.key_hash)
                .bind(&k.user_id)
                .bind(k.created_at)
                .bind(k.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn api_key(&self, key_hash: &str, now: i64) -> StoreResult<Option<(ApiKeyRow, UserRow)>> {
                let q = format!(
                    "SELECT k.id, k.name, k.key_hash, k.user_id, k.created_at, k.expires_at, k.revoked_at, {USER_COLS} \
                     FROM api_keys k JOIN users u ON u.id = k.user_id \
                     WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND k.expires_at > $2"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(key_hash)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(r) = row else { return Ok(None) };
                sqlx::query("UPDATE api_keys SET last_used = $1 WHERE key_hash = $2")
                    .bind(now)
                    .bind(key_hash)
                    .execute(&self.pool)
                    .await?;
                let k = ApiKeyRow {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    key_hash: r.try_get(2)?,
                    user_id: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                    expires_at: r.try_get(5)?,
                    revoked_at: r.try_get(6)?,
                };
                Ok(Some((k, user_from_row(&r, 7)?)))
            }

            async fn get_setting(&self, key: &str) -> StoreResult<Option<SettingRow>> {
                let row = sqlx::query("SELECT key, value, updated_at, updated_by FROM settings WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| {
                    Ok(SettingRow {
                        key: r.try_get(0)?,
                        value: r.try_get(1)?,
                        updated_at: r.try_get(2)?,
                        updated_by: r.try_get(3)?,
                    })
                })
                .transpose()
            }

            async fn put_setting(&self, row: &SettingRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO settings (key, value, updated_at, updated_by) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                )
                .bind(&row.key)
                .bind(&row.value)
                .bind(row.updated_at)
                .bind(&row.updated_by)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn record_pve_notification(&self, n: &PveNotificationRow) -> StoreResult<bool> {
                let r = sqlx::query(
                    "INSERT INTO pve_notifications (dedup_key, node, kind, severity, title, body, received_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (dedup_key) DO NOTHING",
                )
                .bind(&n.dedup_key)
                .bind(&n.node)
                .bind(&n.kind)
                .bind(&n.severity)
                .bind(&n.title)
                .bind(&n.body)
                .bind(n.received_at)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn pve_notifications(&self, node: Option<&str>, limit: i64) -> StoreResult<Vec<PveNotificationRow>> {
                let rows = sqlx::query(
                    "SELECT id, dedup_key, node, kind, severity, title, body, received_at FROM pve_notifications \
                     WHERE ($1 IS NULL OR node = $1) ORDER BY received_at DESC, id DESC LIMIT $2",
                )
                .bind(node)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(PveNotificationRow {
                            id: r.try_get(0)?,
                            dedup_key: r.try_get(1)?,
                            node: r.try_get(2)?,
                            kind: r.try_get(3)?,
                            severity: r.try_get(4)?,
                            title: r.try_get(5)?,
                            body: r.try_get(6)?,
                            received_at: r.try_get(7)?,
                        })
                    })
                    .collect()
            }

            async fn audit_append(&self, a: &AuditRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO audit_log (seq, ts, actor, kind, incident_id, plan_id, detail, prev_hash, hash) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(a.seq)
                .bind(a.ts)
                .bind(&a.actor)
                .bind(&a.kind)
                .bind(a.incident_id.as_deref())
                .bind(a.plan_id.as_deref())
                .bind(&a.detail)
                .bind(&a.prev_hash)
                .bind(&a.hash)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn audit_entries(&self, incident_id: Option<&str>, after_seq: i64, limit: i64) -> StoreResult<Vec<AuditRow>> {
                let rows = sqlx::query(
                    "SELECT seq, ts, actor, kind, incident_id, plan_id, detail, prev_hash, hash FROM audit_log \
                     WHERE seq > $1 AND ($2 IS NULL OR incident_id = $2) ORDER BY seq LIMIT $3",
                )
                .bind(after_seq)
                .bind(incident_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(AuditRow {
                            seq: r.try_get(0)?,
                            ts: r.try_get(1)?,
                            actor: r.try_get(2)?,
                            kind: r.try_get(3)?,
                            incident_id: r.try_get(4)?,
                            plan_id: r.try_get(5)?,
                            detail: r.try_get(6)?,
                            prev_hash: r.try_get(7)?,
                            hash: r.try_get(8)?,
                        })
                    })
                    .collect()
            }

            async fn audit_last(&self) -> StoreResult<Option<AuditRow>> {
                let r = sqlx::query("SELECT MAX(seq) FROM audit_log").fetch_one(&self.pool).await?;
                let max: Option<i64> = r.try_get(0)?;
                match max {
                    None => Ok(None),
                    Some(m) => Ok(self.audit_entries(None, m - 1, 1).await?.into_iter().next()),
                }
            }

            async fn vectors_load(&self) -> StoreResult<Vec<VectorRow>> {
                let rows = sqlx::query("SELECT id, kind, embedder, dim, vector, payload, created_at FROM memory_vectors")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        let dim: i64 = r.try_get(3)?;
                        Ok(VectorRow {
                            id: r.try_get(0)?,
                            kind: r.try_get(1)?,
                            embedder: r.try_get(2)?,
                            dim: usize::try_from(dim).unwrap_or(0),
                            vector: r.try_get(4)?,
                            payload: r.try_get(5)?,
                            created_at: r.try_get(6)?,
                        })
                    })
                    .collect()
            }

            async fn vectors_upsert(&self, rows: &[VectorRow], now: i64) -> StoreResult<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                for v in rows {
                    sqlx::query(
                        "INSERT INTO memory_vectors (id, kind, embedder, dim, vector, payload, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, \
                         embedder = excluded.embedder, dim = excluded.dim, vector = excluded.vector, \
                         payload = excluded.payload, created_at = excluded.created_at, updated_at = excluded.updated_at",
                    )
                    .bind(&v.id)
                    .bind(&v.kind)
                    .bind(&v.embedder)
                    .bind(i64::try_from(v.dim).unwrap_or(0))
                    .bind(&v.vector)
                    .bind(&v.payload)
                    .bind(v.created_at)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn vectors_delete(&self, ids: &[String]) -> StoreResult<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                for id in ids {
                    sqlx::query("DELETE FROM memory_vectors WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn vectors_delete_older_than(&self, kind: &str, before: i64) -> StoreResult<u64> {
                let r = sqlx::query("DELETE FROM memory_vectors WHERE kind = $1 AND created_at < $2")
                    .bind(kind)
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected())
            }

            async fn prune(&self, cut: &PruneCutoffs) -> StoreResult<PruneCounts> {
                let mut tx = self.pool.begin_with($begin).await?;
                let facts = sqlx::query("DELETE FROM facts WHERE received_at < $1")
                    .bind(cut.facts_before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let events = sqlx::query("DELETE FROM pve_notifications WHERE received_at < $1")
                    .bind(cut.facts_before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let summaries = sqlx::query("DELETE FROM log_templates WHERE last_seen < $1")
                    .bind(cut.summaries_before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let incidents = sqlx::query("DELETE FROM incidents WHERE state = 'resolved' AND resolved_at < $1")
                    .bind(cut.incidents_before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM llm_exchanges WHERE created_at < $1")
                    .bind(cut.incidents_before)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM chat_messages WHERE created_at < $1")
                    .bind(cut.incidents_before)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM skill_runs WHERE updated_at < $1")
                    .bind(cut.incidents_before)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM plans WHERE updated_at < $1 AND status <> 'active'")
                    .bind(cut.incidents_before)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM llm_narratives WHERE incident_id NOT IN (SELECT id FROM incidents)")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(PruneCounts { facts: facts + events, summaries, incidents })
            }

            async fn record_exchange(&self, e: &ExchangeRow) -> StoreResult<i64> {
                let row = sqlx::query(
                    "INSERT INTO llm_exchanges (subject_kind, subject_id, provider, model, task, attempt, request_body, \
                     response_body, http_status, tokens_in, tokens_out, latency_ms, est_cost_usd, outcome, error, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) RETURNING id",
                )
                .bind(&e.subject_kind)
                .bind(&e.subject_id)
                .bind(&e.provider)
                .bind(&e.model)
                .bind(&e.task)
                .bind(e.attempt)
                .bind(&e.request_body)
                .bind(&e.response_body)
                .bind(e.http_status)
                .bind(e.tokens_in)
                .bind(e.tokens_out)
                .bind(e.latency_ms)
                .bind(e.est_cost_usd)
                .bind(&e.outcome)
                .bind(&e.error)
                .bind(e.created_at)
                .fetch_one(&self.pool)
                .await?;
                Ok(row.try_get(0)?)
            }

            async fn exchanges(&self, kind: &str, id: &str, limit: i64) -> StoreResult<Vec<ExchangeRow>> {
                let rows = sqlx::query(
                    "SELECT id, subject_kind, subject_id, provider, model, task, attempt, request_body, response_body, \
                     http_status, tokens_in, tokens_out, latency_ms, est_cost_usd, outcome, error, created_at \
                     FROM llm_exchanges WHERE subject_kind = $1 AND subject_id = $2 ORDER BY id LIMIT $3",
                )
                .bind(kind)
                .bind(id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(ExchangeRow {
                            id: r.try_get(0)?,
                            subject_kind: r.try_get(1)?,
                            subject_id: r.try_get(2)?,
                            provider: r.try_get(3)?,
                            model: r.try_get(4)?,
                            task: r.try_get(5)?,
                            attempt: r.try_get(6)?,
                            request_body: r.try_get(7)?,
                            response_body: r.try_get(8)?,
                            http_status: r.try_get(9)?,
                            tokens_in: r.try_get(10)?,
                            tokens_out: r.try_get(11)?,
                            latency_ms: r.try_get(12)?,
                            est_cost_usd: r.try_get(13)?,
                            outcome: r.try_get(14)?,
                            error: r.try_get(15)?,
                            created_at: r.try_get(16)?,
                        })
                    })
                    .collect()
            }

            async fn put_model_narrative(&self, n: &ModelNarrativeRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO llm_narratives (incident_id, provider, model, status, narrative, error, refs, created_at, severity) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (incident_id) DO UPDATE SET provider = excluded.provider, severity = excluded.severity, \
                     model = excluded.model, status = excluded.status, narrative = excluded.narrative, error = excluded.error, \
                     refs = excluded.refs, created_at = excluded.created_at",
                )
                .bind(&n.incident_id)
                .bind(&n.provider)
                .bind(&n.model)
                .bind(&n.status)
                .bind(&n.narrative)
                .bind(&n.error)
                .bind(&n.refs)
                .bind(n.created_at)
                .bind(&n.severity)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn model_narrative(&self, incident_id: &str) -> StoreResult<Option<ModelNarrativeRow>> {
                let row = sqlx::query(
                    "SELECT incident_id, provider, model, status, narrative, error, refs, created_at, severity FROM llm_narratives WHERE incident_id = $1",
                )
                .bind(incident_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| {
                    Ok(ModelNarrativeRow {
                        incident_id: r.try_get(0)?,
                        provider: r.try_get(1)?,
                        model: r.try_get(2)?,
                        status: r.try_get(3)?,
                        narrative: r.try_get(4)?,
                        error: r.try_get(5)?,
                        refs: r.try_get(6)?,
                        created_at: r.try_get(7)?,
                        severity: r.try_get(8)?,
                    })
                })
                .transpose()
            }

            async fn add_llm_usage(&self, provider: &str, month: &str, tokens_in: i64, tokens_out: i64, cost: f64) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO llm_usage (provider, month, tokens_in, tokens_out, calls, cost_usd) VALUES ($1, $2, $3, $4, 1, $5) \
                     ON CONFLICT (provider, month) DO UPDATE SET tokens_in = llm_usage.tokens_in + excluded.tokens_in, \
                     tokens_out = llm_usage.tokens_out + excluded.tokens_out, calls = llm_usage.calls + 1, \
                     cost_usd = llm_usage.cost_usd + excluded.cost_usd",
                )
                .bind(provider)
                .bind(month)
                .bind(tokens_in)
                .bind(tokens_out)
                .bind(cost)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn llm_usage(&self, provider: &str, month: &str) -> StoreResult<UsageRow> {
                let row = sqlx::query(
                    "SELECT tokens_in, tokens_out, calls, cost_usd FROM llm_usage WHERE provider = $1 AND month = $2",
                )
                .bind(provider)
                .bind(month)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some(r) => Ok(UsageRow {
                        tokens_in: r.try_get(0)?,
                        tokens_out: r.try_get(1)?,
                        calls: r.try_get(2)?,
                        cost_usd: r.try_get(3)?,
                    }),
                    None => Ok(UsageRow::default()),
                }
            }

            async fn append_chat(&self, m: &ChatMessageRow) -> StoreResult<i64> {
                let row = sqlx::query(
                    "INSERT INTO chat_messages (chat_id, role, author, text, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                )
                .bind(&m.chat_id)
                .bind(&m.role)
                .bind(&m.author)
                .bind(&m.text)
                .bind(m.created_at)
                .fetch_one(&self.pool)
                .await?;
                Ok(row.try_get(0)?)
            }

            async fn chat_messages(&self, chat_id: &str, limit: i64) -> StoreResult<Vec<ChatMessageRow>> {
                let rows = sqlx::query(
                    "SELECT id, chat_id, role, author, text, created_at FROM chat_messages WHERE chat_id = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(chat_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let mut out = rows
                    .iter()
                    .map(|r| {
                        Ok(ChatMessageRow {
                            id: r.try_get(0)?,
                            chat_id: r.try_get(1)?,
                            role: r.try_get(2)?,
                            author: r.try_get(3)?,
                            text: r.try_get(4)?,
                            created_at: r.try_get(5)?,
                        })
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                out.reverse();
                Ok(out)
            }

            async fn create_skill_run(&self, r: &SkillRunRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO skill_runs (id, skill_id, incident_id, started_by, steps, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&r.id)
                .bind(&r.skill_id)
                .bind(&r.incident_id)
                .bind(&r.started_by)
                .bind(&r.steps)
                .bind(r.created_at)
                .bind(r.updated_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn skill_run(&self, id: &str) -> StoreResult<Option<SkillRunRow>> {
                let row = sqlx::query(
                    "SELECT id, skill_id, incident_id, started_by, steps, created_at, updated_at FROM skill_runs WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| {
                    Ok(SkillRunRow {
                        id: r.try_get(0)?,
                        skill_id: r.try_get(1)?,
                        incident_id: r.try_get(2)?,
                        started_by: r.try_get(3)?,
                        steps: r.try_get(4)?,
                        created_at: r.try_get(5)?,
                        updated_at: r.try_get(6)?,
                    })
                })
                .transpose()
            }

            async fn put_plan(&self, r: &PlanRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO plans (id, incident_id, source, status, created_by, run, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, run = excluded.run, updated_at = excluded.updated_at",
                )
                .bind(&r.id)
                .bind(&r.incident_id)
                .bind(&r.source)
                .bind(&r.status)
                .bind(&r.created_by)
                .bind(&r.run)
                .bind(r.created_at)
                .bind(r.updated_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn plan(&self, id: &str) -> StoreResult<Option<PlanRow>> {
                let q = format!("SELECT {PLAN_COLS} FROM plans WHERE id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(plan_from_row).transpose()
            }

            async fn plans_for_incident(&self, incident_id: &str) -> StoreResult<Vec<PlanRow>> {
                let q = format!("SELECT {PLAN_COLS} FROM plans WHERE incident_id = $1 ORDER BY created_at, id");
                let rows = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(incident_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(plan_from_row).collect()
            }

            async fn plans_with_status(&self, status: &str) -> StoreResult<Vec<PlanRow>> {
                let q = format!("SELECT {PLAN_COLS} FROM plans WHERE status = $1 ORDER BY created_at, id");
                let rows = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(status)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(plan_from_row).collect()
            }

            async fn update_skill_run(&self, id: &str, steps: &str, updated_at: i64) -> StoreResult<()> {
                let r = sqlx::query("UPDATE skill_runs SET steps = $1, updated_at = $2 WHERE id = $3")
                    .bind(steps)
                    .bind(updated_at)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                if r.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }
        }
    };
}

/// A fact row of a group commit: (agent, stream, seq, idx, fact).
type FactRow<'a> = (&'a str, i64, i64, i64, &'a FactRecord);

impl SqliteStore {
    async fn insert_facts(
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        rows: &[FactRow<'_>],
        now: i64,
    ) -> StoreResult<()> {
        for chunk in rows.chunks(500) {
            let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO facts (agent_id, stream_id, seq, idx, kind, observed_at, received_at, body) ",
            );
            qb.push_values(chunk, |mut b, (agent, stream, seq, idx, f)| {
                b.push_bind(*agent)
                    .push_bind(*stream)
                    .push_bind(*seq)
                    .push_bind(*idx)
                    .push_bind(f.kind.as_str())
                    .push_bind(f.observed_at)
                    .push_bind(now)
                    .push_bind(f.body.as_str());
            });
            qb.push(" ON CONFLICT (agent_id, stream_id, seq, idx) DO NOTHING");
            qb.build().execute(&mut **tx).await?;
        }
        Ok(())
    }
}

impl PgStore {
    /// One statement with array parameters: the same SQL text every time, so
    /// PostgreSQL plans it once (a multi-row VALUES list is re-planned per size).
    async fn insert_facts(
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        rows: &[FactRow<'_>],
        now: i64,
    ) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let agents: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let streams: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let seqs: Vec<i64> = rows.iter().map(|r| r.2).collect();
        let idxs: Vec<i64> = rows.iter().map(|r| r.3).collect();
        let kinds: Vec<&str> = rows.iter().map(|r| r.4.kind.as_str()).collect();
        let observed: Vec<i64> = rows.iter().map(|r| r.4.observed_at).collect();
        let bodies: Vec<&str> = rows.iter().map(|r| r.4.body.as_str()).collect();
        sqlx::query(
            "INSERT INTO facts (agent_id, stream_id, seq, idx, kind, observed_at, received_at, body) \
             SELECT a, s, q, i, k, o, $8, b FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], $7::text[]) \
             AS t(a, s, q, i, k, o, b) ON CONFLICT (agent_id, stream_id, seq, idx) DO NOTHING",
        )
        .bind(agents)
        .bind(streams)
        .bind(seqs)
        .bind(idxs)
        .bind(kinds)
        .bind(observed)
        .bind(bodies)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

// SQLite: take the write lock at BEGIN so a transaction that reads first never
// fails to upgrade ("database is locked") while another one commits.
impl_store!(
    SqliteStore,
    "sqlite",
    SQLITE_MIGRATIONS,
    sqlx::Sqlite,
    "BEGIN IMMEDIATE"
);
impl_store!(PgStore, "postgres", PG_MIGRATIONS, sqlx::Postgres, "BEGIN");
