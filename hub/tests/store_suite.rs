//! One behavioural suite for the [`Store`] trait, run on SQLite and on
//! PostgreSQL. The PostgreSQL run needs `WINGMAN_TEST_PG_URL` (a database the
//! user may `CREATE DATABASE` from); `.ci/test` sets it. Under `CI=true` a
//! missing URL fails the test instead of skipping it.

use wingman_hub::store::{
    self, AgentRow, ApiKeyRow, AuditRow, ChatMessageRow, DynStore, ExchangeRow, FactRecord,
    IncidentFilter, IncidentRow, ModelNarrativeRow, NewToken, PruneCutoffs, PveNotificationRow,
    SessionRow, SettingRow, SkillRunRow, StoreError, TemplateRecord, TokenUse, UsageRow, UserRow,
    VectorRow,
};

fn agent(id: &str, now: i64) -> AgentRow {
    AgentRow {
        id: id.into(),
        hostname: format!("host-{id}"),
        kind: "plain".into(),
        agent_version: "0.1.0".into(),
        enrolled_at: now,
        revoked_at: None,
        last_seen: None,
        online: false,
        cert_not_after: now + 1_000_000,
    }
}

fn fact(kind: &str, at: i64, body: &str) -> FactRecord {
    FactRecord {
        kind: kind.into(),
        observed_at: at,
        body: body.into(),
        latest: kind != "log_summary",
    }
}

fn tpl(id: u64, count: i64, first: i64, last: i64, sev: i64) -> TemplateRecord {
    TemplateRecord {
        source_kind: "journal".into(),
        source_name: "nginx.service".into(),
        template_id: id,
        template: "GET <*> HTTP/<*> <*>".into(),
        severity: sev,
        count,
        burst: false,
        first_seen: first,
        last_seen: last,
    }
}

async fn suite(s: DynStore) {
    let now = 1_800_000_000_000i64;
    // Migrations are idempotent.
    s.migrate().await.unwrap();
    plans_suite(&s, now).await;
    llm_suite(&s, now).await;

    // Tokens.
    let tok = NewToken {
        id: "t1".into(),
        secret_hash: "h1".into(),
        created_at: now,
        expires_at: now + 1000,
    };
    s.create_enrollment_token(&tok).await.unwrap();
    assert_eq!(
        s.consume_enrollment_token("t1", "wrong", "a", now)
            .await
            .unwrap(),
        TokenUse::Unknown
    );
    assert_eq!(
        s.consume_enrollment_token("t1", "h1", "a", now + 2000)
            .await
            .unwrap(),
        TokenUse::Expired
    );
    assert_eq!(
        s.consume_enrollment_token("t1", "h1", "a", now)
            .await
            .unwrap(),
        TokenUse::Consumed
    );
    assert_eq!(
        s.consume_enrollment_token("t1", "h1", "b", now)
            .await
            .unwrap(),
        TokenUse::Used
    );
    assert_eq!(
        s.consume_enrollment_token("nope", "h1", "b", now)
            .await
            .unwrap(),
        TokenUse::Unknown
    );
    // Parallel consumption: exactly one winner.
    s.create_enrollment_token(&NewToken {
        id: "t2".into(),
        ..tok.clone()
    })
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.consume_enrollment_token("t2", "h1", &format!("a{i}"), now)
                .await
                .unwrap()
        }));
    }
    let mut consumed = 0;
    for t in tasks {
        consumed += usize::from(t.await.unwrap() == TokenUse::Consumed);
    }
    assert_eq!(consumed, 1);

    // Agents and certificates.
    s.create_agent(&agent("a1", now), "fp1").await.unwrap();
    s.create_agent(&agent("a2", now), "fp2").await.unwrap();
    assert!(matches!(
        s.create_agent(&agent("a1", now), "fp9").await,
        Err(StoreError::Conflict)
    ));
    s.add_certificate("a1", "fp1b", now + 10, now + 2_000_000)
        .await
        .unwrap();
    let mut certs = s.active_certificates(now).await.unwrap();
    certs.sort();
    assert_eq!(certs.len(), 3);
    assert_eq!(
        s.get_agent("a1").await.unwrap().unwrap().cert_not_after,
        now + 2_000_000
    );
    assert_eq!(
        s.active_certificates(now + 1_500_000).await.unwrap(),
        vec![("fp1b".to_string(), "a1".to_string())]
    );
    assert!(s.revoke_agent("a2", now).await.unwrap());
    assert!(!s.revoke_agent("a2", now).await.unwrap());
    assert!(!s.revoke_agent("zz", now).await.unwrap());
    assert_eq!(s.revoked_agents().await.unwrap(), vec!["a2".to_string()]);
    assert!(
        s.active_certificates(now)
            .await
            .unwrap()
            .iter()
            .all(|(_, a)| a != "a2")
    );
    let listed: Vec<String> = s
        .list_agents()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(listed, vec!["a1".to_string(), "a2".to_string()]);
    assert!(s.get_agent("zz").await.unwrap().is_none());

    // Presence.
    s.agent_connected("a1", "renamed", "docker", "0.2.0", now + 100)
        .await
        .unwrap();
    let a1 = s.get_agent("a1").await.unwrap().unwrap();
    assert!(a1.online);
    assert_eq!(
        (a1.hostname.as_str(), a1.kind.as_str(), a1.last_seen),
        ("renamed", "docker", Some(now + 100))
    );
    s.touch_agent("a1", now + 200).await.unwrap();
    assert!(
        s.mark_stale_offline(now + 150, now + 300)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.mark_stale_offline(now + 250, now + 300).await.unwrap(),
        vec!["a1".to_string()]
    );
    assert!(!s.get_agent("a1").await.unwrap().unwrap().online);
    s.touch_agent("a1", now + 400).await.unwrap();
    assert!(s.get_agent("a1").await.unwrap().unwrap().online);
    assert_eq!(
        s.presence_events("a1", 10).await.unwrap(),
        vec![(true, now + 400), (false, now + 300), (true, now + 100)]
    );
    // A revoked agent never comes back online.
    s.agent_connected("a2", "h", "plain", "0.1.0", now)
        .await
        .unwrap();
    assert!(!s.get_agent("a2").await.unwrap().unwrap().online);

    // Ingest: idempotent on (agent, stream, seq).
    let stream = u64::MAX - 7; // exercises the full u64 range
    assert_eq!(s.committed_seq("a1", stream).await.unwrap(), 0);
    let o = s
        .ingest_batch("a1", stream, 1, &[fact("host", now, "{\"v\":1}")], &[], now)
        .await
        .unwrap();
    assert_eq!((o.committed_seq, o.duplicate), (1, false));
    let o = s
        .ingest_batch("a1", stream, 1, &[fact("host", now, "{\"v\":1}")], &[], now)
        .await
        .unwrap();
    assert_eq!((o.committed_seq, o.duplicate), (1, true));
    assert_eq!(s.fact_count("a1").await.unwrap(), 1);
    let o = s
        .ingest_batch(
            "a1",
            stream,
            2,
            &[
                fact("host", now + 10, "{\"v\":2}"),
                fact("other", now + 5, "{}"),
            ],
            &[],
            now,
        )
        .await
        .unwrap();
    assert_eq!(o.committed_seq, 2);
    assert_eq!(s.fact_count("a1").await.unwrap(), 3);
    // An older observation does not replace the latest one.
    s.ingest_batch(
        "a1",
        stream,
        3,
        &[fact("host", now + 1, "{\"v\":0}")],
        &[],
        now,
    )
    .await
    .unwrap();
    let latest = s.latest_facts("a1").await.unwrap();
    assert_eq!(latest.len(), 2);
    assert_eq!(latest[0].kind, "host");
    assert_eq!(latest[0].body, "{\"v\":2}");
    assert_eq!(s.committed_seq("a1", stream).await.unwrap(), 3);
    assert_eq!(s.committed_seq("a1", 1).await.unwrap(), 0);

    // Log summaries: not kept as "latest"; template counts accumulate per
    // node and source, a replayed batch does not count twice.
    let big = u64::MAX - 1;
    s.ingest_batch(
        "a1",
        stream,
        4,
        &[fact("log_summary", now, "{}")],
        &[tpl(big, 5, now, now + 10, 6), tpl(7, 1, now, now, 3)],
        now,
    )
    .await
    .unwrap();
    s.ingest_batch(
        "a1",
        stream,
        4,
        &[fact("log_summary", now, "{}")],
        &[tpl(big, 5, now, now + 10, 6)],
        now,
    )
    .await
    .unwrap();
    s.ingest_batch(
        "a1",
        stream,
        5,
        &[],
        &[tpl(big, 2, now - 5, now + 20, 3)],
        now,
    )
    .await
    .unwrap();
    s.ingest_batch("a2", 9, 1, &[], &[tpl(big, 1, now, now, 6)], now)
        .await
        .unwrap();
    assert_eq!(s.latest_facts("a1").await.unwrap().len(), 2);
    let recent = s.recent_facts("a1", "host", 2).await.unwrap();
    assert_eq!(
        recent.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        vec!["{\"v\":2}", "{\"v\":0}"]
    );
    let rows = s.log_templates("a1", 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    let r = rows
        .iter()
        .find(|r| r.template_id == big.to_string())
        .unwrap();
    assert_eq!(
        (r.count, r.severity, r.first_seen, r.last_seen),
        (7, 3, now - 5, now + 20)
    );
    let across = s.template_rows(big).await.unwrap();
    assert_eq!(
        across
            .iter()
            .map(|r| r.agent_id.as_str())
            .collect::<Vec<_>>(),
        vec!["a1", "a2"]
    );

    // Incidents: upsert, filter, paginate, live set for the engine.
    for i in 0..5i64 {
        let row = IncidentRow {
            id: format!("inc-{i}"),
            fingerprint: format!("fp{i}"),
            state: if i == 4 {
                "resolved".into()
            } else {
                "open".into()
            },
            severity: if i % 2 == 0 {
                "critical".into()
            } else {
                "warning".into()
            },
            title: format!("t{i}"),
            nodes: if i < 2 { "a1".into() } else { "a1,a2".into() },
            opened_at: now + i,
            updated_at: now + 10 * i,
            resolved_at: (i == 4).then_some(now + 40),
            body: "{}".into(),
        };
        s.upsert_incident(&row).await.unwrap();
    }
    let mut changed = s.get_incident("inc-1").await.unwrap().unwrap();
    changed.state = "acknowledged".into();
    changed.updated_at = now + 100;
    s.upsert_incident(&changed).await.unwrap();
    let all = IncidentFilter {
        limit: 10,
        ..Default::default()
    };
    let (rows, total) = s.list_incidents(&all).await.unwrap();
    assert_eq!(total, 5);
    assert_eq!(rows[0].id, "inc-1", "most recently updated first");
    let (rows, total) = s
        .list_incidents(&IncidentFilter {
            state: Some("open".into()),
            limit: 2,
            offset: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((rows.len(), total), (2, 3));
    let (_, total) = s
        .list_incidents(&IncidentFilter {
            severity: Some("critical".into()),
            node: Some("a2".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(total, 2);
    let (rows, _) = s
        .list_incidents(&IncidentFilter {
            limit: 2,
            offset: 4,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(s.live_incidents(now + 41).await.unwrap().len(), 4);
    assert_eq!(s.live_incidents(now).await.unwrap().len(), 5);
    assert!(s.get_incident("nope").await.unwrap().is_none());

    // Users, sessions, API keys.
    let user = UserRow {
        id: "u1".into(),
        name: "admin".into(),
        password_hash: "$argon2id$x".into(),
        role: "admin".into(),
        must_change_password: true,
    };
    s.create_user(&user, now).await.unwrap();
    assert!(matches!(
        s.create_user(
            &UserRow {
                id: "u2".into(),
                ..user.clone()
            },
            now
        )
        .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(s.user_count().await.unwrap(), 1);
    assert_eq!(s.user_by_name("admin").await.unwrap().unwrap(), user);
    s.set_password("u1", "$argon2id$y", false).await.unwrap();
    let u = s.user_by_name("admin").await.unwrap().unwrap();
    assert_eq!(
        (u.password_hash.as_str(), u.must_change_password),
        ("$argon2id$y", false)
    );
    assert!(matches!(
        s.set_password("nobody", "x", false).await,
        Err(StoreError::NotFound)
    ));
    let sess = SessionRow {
        id_hash: "sh".into(),
        user_id: "u1".into(),
        csrf_token: "c".into(),
        created_at: now,
        last_seen: now,
        expires_at: now + 1000,
    };
    s.create_session(&sess).await.unwrap();
    let (got, u) = s.session("sh", now).await.unwrap().unwrap();
    assert_eq!((got, u.name.as_str()), (sess.clone(), "admin"));
    assert!(
        s.session("sh", now + 1000).await.unwrap().is_none(),
        "expired"
    );
    s.touch_session("sh", now + 5).await.unwrap();
    assert_eq!(
        s.session("sh", now).await.unwrap().unwrap().0.last_seen,
        now + 5
    );
    s.delete_session("sh").await.unwrap();
    assert!(s.session("sh", now).await.unwrap().is_none());
    let key = ApiKeyRow {
        id: "k1".into(),
        name: "ci".into(),
        key_hash: "kh".into(),
        user_id: "u1".into(),
        created_at: now,
        expires_at: now + 1000,
        revoked_at: None,
    };
    s.create_api_key(&key).await.unwrap();
    assert_eq!(s.api_key("kh", now).await.unwrap().unwrap().0, key);
    assert!(s.api_key("kh", now + 1000).await.unwrap().is_none());
    assert!(s.api_key("other", now).await.unwrap().is_none());

    // Settings.
    assert!(s.get_setting("notify").await.unwrap().is_none());
    let set = SettingRow {
        key: "notify".into(),
        value: "{\"channels\":[]}".into(),
        updated_at: now,
        updated_by: "admin".into(),
    };
    s.put_setting(&set).await.unwrap();
    let set2 = SettingRow {
        value: "{\"channels\":[1]}".into(),
        updated_at: now + 1,
        ..set.clone()
    };
    s.put_setting(&set2).await.unwrap();
    assert_eq!(s.get_setting("notify").await.unwrap(), Some(set2));

    // PVE notifications: dedup by key, newest first, per node.
    let note = |key: &str, node: &str, at: i64| PveNotificationRow {
        id: 0,
        dedup_key: key.into(),
        node: node.into(),
        kind: "vzdump".into(),
        severity: "error".into(),
        title: "backup failed".into(),
        body: "{}".into(),
        received_at: at,
    };
    assert!(
        s.record_pve_notification(&note("k1", "pve1", now))
            .await
            .unwrap()
    );
    assert!(
        !s.record_pve_notification(&note("k1", "pve1", now + 5))
            .await
            .unwrap()
    );
    assert!(
        s.record_pve_notification(&note("k2", "pve2", now + 1))
            .await
            .unwrap()
    );
    let all = s.pve_notifications(None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|n| n.dedup_key.as_str()).collect::<Vec<_>>(),
        ["k2", "k1"]
    );
    assert_eq!(
        s.pve_notifications(Some("pve1"), 10).await.unwrap().len(),
        1
    );

    // Retention: only what is older than each cut-off goes.
    let facts_before = s.fact_count("a1").await.unwrap();
    assert!(facts_before > 0);
    let keep = s
        .prune(&PruneCutoffs {
            facts_before: now - 1,
            summaries_before: 0,
            incidents_before: 0,
        })
        .await
        .unwrap();
    assert_eq!(keep.facts, 0);
    assert_eq!(s.fact_count("a1").await.unwrap(), facts_before);
    let gone = s
        .prune(&PruneCutoffs {
            facts_before: now + 1_000_000,
            summaries_before: now + 1_000_000,
            incidents_before: now + 1_000_000,
        })
        .await
        .unwrap();
    assert!(gone.facts >= facts_before as u64 + 2, "{gone:?}");
    assert!(gone.summaries > 0, "{gone:?}");
    assert_eq!(s.fact_count("a1").await.unwrap(), 0);
    assert!(s.pve_notifications(None, 10).await.unwrap().is_empty());
    assert!(s.log_templates("a1", 10).await.unwrap().is_empty());

    // Memory vectors: upsert by id, load, delete, retention by kind and age.
    let v = |id: &str, kind: &str, at: i64, x: f32| VectorRow {
        id: id.into(),
        kind: kind.into(),
        embedder: "hashed/v1/2".into(),
        dim: 2,
        vector: [x.to_le_bytes(), 1f32.to_le_bytes()].concat(),
        payload: "{}".into(),
        created_at: at,
    };
    s.vectors_upsert(
        &[
            v("incident:1", "incident", now, 0.5),
            v("skill:a", "skill", 0, 1.0),
        ],
        now,
    )
    .await
    .unwrap();
    s.vectors_upsert(&[v("incident:1", "incident", now, 0.25)], now + 1)
        .await
        .unwrap();
    let mut all = s.vectors_load().await.unwrap();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], v("incident:1", "incident", now, 0.25));
    assert_eq!(
        s.vectors_delete_older_than("incident", now).await.unwrap(),
        0
    );
    assert_eq!(
        s.vectors_delete_older_than("incident", now + 1)
            .await
            .unwrap(),
        1
    );
    s.vectors_delete(&["skill:a".to_string()]).await.unwrap();
    assert!(s.vectors_load().await.unwrap().is_empty());
    // A vector whose length does not match its dimension is refused.
    let mut bad = v("incident:2", "incident", now, 1.0);
    bad.dim = 3;
    assert!(s.vectors_upsert(&[bad], now).await.is_err());

    // Audit: append-only, in order, per incident; the head.
    assert!(s.audit_last().await.unwrap().is_none());
    let a = |seq: i64, inc: Option<&str>| AuditRow {
        seq,
        ts: 1_800_000_000,
        actor: "user:alice".into(),
        kind: "incident_acknowledged".into(),
        incident_id: inc.map(str::to_string),
        plan_id: None,
        detail: "{}".into(),
        prev_hash: format!("h{}", seq - 1),
        hash: format!("h{seq}"),
    };
    s.audit_append(&a(1, Some("inc-1"))).await.unwrap();
    s.audit_append(&a(2, None)).await.unwrap();
    s.audit_append(&a(3, Some("inc-1"))).await.unwrap();
    assert!(
        s.audit_append(&a(3, None)).await.is_err(),
        "sequence numbers are unique"
    );
    assert_eq!(s.audit_last().await.unwrap(), Some(a(3, Some("inc-1"))));
    let inc: Vec<i64> = s
        .audit_entries(Some("inc-1"), 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(inc, [1, 3]);
    assert_eq!(s.audit_entries(None, 1, 10).await.unwrap().len(), 2);
    assert!(
        s.exchanges("incident", "inc-1", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Exchanges, model narratives, token usage, chat and skill runs.
async fn llm_suite(s: &DynStore, now: i64) {
    let ex = |attempt: i64, outcome: &str| ExchangeRow {
        id: 0,
        subject_kind: "incident".into(),
        subject_id: "inc-1".into(),
        provider: "openai".into(),
        model: "gpt-test".into(),
        task: "narrative".into(),
        attempt,
        request_body: "{\"model\":\"gpt-test\",\"messages\":[]}".into(),
        response_body: Some("{\"id\":\"x\"}".into()),
        http_status: Some(200),
        tokens_in: Some(1200),
        tokens_out: Some(300),
        latency_ms: 42,
        est_cost_usd: Some(0.0048),
        outcome: outcome.into(),
        error: (outcome != "ok").then(|| "invalid model output: x".to_string()),
        created_at: now,
    };
    let a = s.record_exchange(&ex(1, "invalid_output")).await.unwrap();
    let b = s.record_exchange(&ex(2, "ok")).await.unwrap();
    assert!(b > a);
    let mut other = ex(1, "ok");
    other.subject_kind = "chat".into();
    other.subject_id = "user:u1".into();
    other.response_body = None;
    other.http_status = None;
    other.est_cost_usd = None;
    s.record_exchange(&other).await.unwrap();
    let got = s.exchanges("incident", "inc-1", 10).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id, a);
    assert_eq!(got[0].outcome, "invalid_output");
    assert_eq!(got[1].request_body, ex(2, "ok").request_body);
    assert_eq!(got[1].tokens_in, Some(1200));
    assert!((got[1].est_cost_usd.unwrap() - 0.0048).abs() < 1e-12);
    let chat = s.exchanges("chat", "user:u1", 10).await.unwrap();
    assert_eq!(chat.len(), 1);
    assert_eq!(chat[0].response_body, None);
    assert_eq!(s.exchanges("incident", "inc-1", 1).await.unwrap().len(), 1);

    assert!(s.model_narrative("inc-llm").await.unwrap().is_none());
    let mut n = ModelNarrativeRow {
        incident_id: "inc-llm".into(),
        severity: "warning".into(),
        provider: "openai".into(),
        model: "gpt-test".into(),
        status: "fallback".into(),
        narrative: None,
        error: Some("invalid model output twice".into()),
        refs: "{}".into(),
        created_at: now,
    };
    s.put_model_narrative(&n).await.unwrap();
    n.status = "ok".into();
    n.severity = "critical".into();
    n.narrative = Some("{\"summary\":\"s\"}".into());
    n.error = None;
    s.put_model_narrative(&n).await.unwrap();
    assert_eq!(s.model_narrative("inc-llm").await.unwrap(), Some(n));

    assert_eq!(
        s.llm_usage("openai", "2027-01").await.unwrap(),
        UsageRow::default()
    );
    s.add_llm_usage("openai", "2027-01", 100, 20, 0.5)
        .await
        .unwrap();
    s.add_llm_usage("openai", "2027-01", 10, 2, 0.25)
        .await
        .unwrap();
    s.add_llm_usage("openai", "2027-02", 1, 1, 0.0)
        .await
        .unwrap();
    let u = s.llm_usage("openai", "2027-01").await.unwrap();
    assert_eq!((u.tokens_in, u.tokens_out, u.calls), (110, 22, 2));
    assert!((u.cost_usd - 0.75).abs() < 1e-9);
    assert_eq!(s.llm_usage("anthropic", "2027-01").await.unwrap().calls, 0);

    for (i, role) in ["user", "assistant", "user"].iter().enumerate() {
        s.append_chat(&ChatMessageRow {
            id: 0,
            chat_id: "user:u1".into(),
            role: (*role).into(),
            author: "alice".into(),
            text: format!("m{i} <b>"),
            created_at: now + i as i64,
        })
        .await
        .unwrap();
    }
    let m = s.chat_messages("user:u1", 2).await.unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(
        (m[0].text.as_str(), m[1].text.as_str()),
        ("m1 <b>", "m2 <b>")
    );
    assert!(s.chat_messages("user:u2", 10).await.unwrap().is_empty());

    let run = SkillRunRow {
        id: "run-1".into(),
        skill_id: "disk-filling".into(),
        incident_id: Some("inc-1".into()),
        started_by: "alice".into(),
        steps: "[]".into(),
        created_at: now,
        updated_at: now,
    };
    s.create_skill_run(&run).await.unwrap();
    assert!(matches!(
        s.create_skill_run(&run).await,
        Err(StoreError::Conflict)
    ));
    s.update_skill_run("run-1", "[{\"done\":true}]", now + 5)
        .await
        .unwrap();
    let r = s.skill_run("run-1").await.unwrap().unwrap();
    assert_eq!(
        (r.steps.as_str(), r.updated_at),
        ("[{\"done\":true}]", now + 5)
    );
    assert!(s.skill_run("nope").await.unwrap().is_none());
    assert!(matches!(
        s.update_skill_run("nope", "[]", now).await,
        Err(StoreError::NotFound)
    ));
}

/// Remediation plans: insert, replace (status and run change, origin stays),
/// per incident in order, by status, and retention keeps active plans.
async fn plans_suite(s: &DynStore, now: i64) {
    let row = |id: &str, incident: &str, status: &str, at: i64| wingman_hub::store::PlanRow {
        id: id.into(),
        incident_id: incident.into(),
        source: "operator".into(),
        status: status.into(),
        created_by: "user:alice".into(),
        run: format!("{{\"v\":\"{id}\"}}"),
        created_at: at,
        updated_at: at,
    };
    s.put_plan(&row("p1", "inc-1", "active", now))
        .await
        .unwrap();
    s.put_plan(&row("p2", "inc-1", "active", now + 1))
        .await
        .unwrap();
    s.put_plan(&row("p3", "inc-2", "active", now + 2))
        .await
        .unwrap();
    let mut done = row("p1", "inc-9", "completed", now + 5);
    done.created_by = "user:mallory".into();
    done.run = "{\"v\":\"done\"}".into();
    s.put_plan(&done).await.unwrap();
    let p1 = s.plan("p1").await.unwrap().unwrap();
    assert_eq!(
        (p1.status.as_str(), p1.run.as_str(), p1.updated_at),
        ("completed", "{\"v\":\"done\"}", now + 5)
    );
    // The origin of a plan never changes.
    assert_eq!(
        (
            p1.incident_id.as_str(),
            p1.created_by.as_str(),
            p1.created_at
        ),
        ("inc-1", "user:alice", now)
    );
    let ids = |v: Vec<wingman_hub::store::PlanRow>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.plans_for_incident("inc-1").await.unwrap()),
        ["p1", "p2"]
    );
    assert_eq!(
        ids(s.plans_with_status("active").await.unwrap()),
        ["p2", "p3"]
    );
    assert!(s.plan("nope").await.unwrap().is_none());
    s.prune(&PruneCutoffs {
        facts_before: 0,
        summaries_before: 0,
        incidents_before: now + 100,
    })
    .await
    .unwrap();
    assert!(
        s.plan("p1").await.unwrap().is_none(),
        "finished plans age out"
    );
    assert_eq!(
        ids(s.plans_with_status("active").await.unwrap()),
        ["p2", "p3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_suite_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let s = store::open(&url).await.unwrap();
    assert_eq!(s.backend(), "sqlite");
    suite(s).await;
    // Reopening keeps the data and does not re-run migrations.
    let s = store::open(&url).await.unwrap();
    assert_eq!(s.user_count().await.unwrap(), 1);
    // The audit log refuses updates and deletes, whoever asks.
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    for q in [
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
    ] {
        let e = sqlx::query(q).execute(&mut c).await.unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
    }
}

/// Creates a fresh database next to the one in `WINGMAN_TEST_PG_URL`.
async fn fresh_pg_database(base: &str) -> (String, String) {
    use sqlx::Connection;
    let name = format!("wingman_t_{}", hex::encode(rand::random::<[u8; 6]>()));
    let mut admin = sqlx::PgConnection::connect(base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    (format!("{prefix}/{name}"), name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_suite_postgres() {
    let Ok(base) = std::env::var("WINGMAN_TEST_PG_URL") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("WINGMAN_TEST_PG_URL is not set: the PostgreSQL suite is mandatory in CI");
        }
        eprintln!(
            "store_suite_postgres: WINGMAN_TEST_PG_URL not set; run `bash .ci/test` to include it"
        );
        return;
    };
    let (url, name) = fresh_pg_database(&base).await;
    let s = store::open(&url).await.unwrap();
    assert_eq!(s.backend(), "postgres");
    suite(s.clone()).await;
    let s2 = store::open(&url).await.unwrap();
    assert_eq!(s2.user_count().await.unwrap(), 1);
    drop((s, s2));
    use sqlx::Connection;
    {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        for q in [
            "UPDATE audit_log SET actor = 'mallory'",
            "DELETE FROM audit_log",
        ] {
            let e = sqlx::query(q).execute(&mut c).await.unwrap_err();
            assert!(e.to_string().contains("append-only"), "{e}");
        }
    }
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
}
