//! The skills library through the hub: loading with a broken operator skill,
//! the API's filters and search, and safe rendering.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{TestHub, http_client};

const OPERATOR_OK: &str = r#"---
id: homelab-nas-mount-stale
title: NAS share mount hangs on the media server
tier: 1
platforms: [host]
tags: [nfs, storage]
triggers:
  detectors: [storage_full]
  keywords: ["stale file handle"]
risk: read-only
privileges: ["root on the node"]
estimated_minutes: 5
applies_to: {}
version: 1
---
# NAS share mount hangs on the media server

## Summary

The NFS share from the NAS hangs & `ls` blocks.

## When to use

When `ls /mnt/media` hangs.

## Diagnosis

```sh
findmnt -t nfs,nfs4
```

## Steps

### Step 1: Check the mount

```sh
timeout 5 stat /mnt/media
```

## Verification

The stat returns in time.

## Rollback

Nothing to roll back: this skill only reads.

## References

- https://wiki.debian.org/NFSServerSetup
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_skills_load_broken_ones_are_skipped_and_the_api_filters() {
    let ops = tempfile::tempdir().unwrap();
    std::fs::write(ops.path().join("homelab-nas-mount-stale.md"), OPERATOR_OK).unwrap();
    std::fs::write(
        ops.path().join("broken.md"),
        "---\nid: broken\ntier: 3\n---\n",
    )
    .unwrap();
    std::fs::write(
        ops.path().join("injected.md"),
        OPERATOR_OK
            .replace("homelab-nas-mount-stale", "injected")
            .replace("hangs & `ls` blocks.", "hangs <script>alert(1)</script>"),
    )
    .unwrap();
    std::fs::write(
        ops.path().join("zfs-pool-degraded.md"),
        OPERATOR_OK.replace("homelab-nas-mount-stale", "zfs-pool-degraded"),
    )
    .unwrap();
    let ops_dir = ops.path().to_path_buf();
    let mut th = TestHub::start(move |c| c.skills_dir = ops_dir).await;
    let lib = &th.hub.skills;
    assert!(lib.skills.len() >= 31, "built-in library loaded");
    assert!(lib.skills.iter().any(|s| s.id == "homelab-nas-mount-stale"));
    assert!(!lib.skills.iter().any(|s| s.id == "broken"));
    let problems: Vec<String> = lib.problems.iter().map(ToString::to_string).collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("broken.md") && p.contains("tier 3")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("zfs-pool-degraded")),
        "built-in id reuse reported: {problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("injected.md") && p.contains("HTML")),
        "{problems:?}"
    );
    assert!(
        !lib.skills.iter().any(|s| s.id == "injected"),
        "a skill with raw HTML is refused"
    );

    let key = th.api_key().await;
    let get = |path: String| {
        let key = key.clone();
        async move {
            let r = http_client()
                .get(path)
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, v) = get(th.url("/api/v1/skills?platform=zfs")).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = v["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"zfs-pool-degraded") && ids.contains(&"zfs-scrub-errors"),
        "{ids:?}"
    );
    assert!(v["skills"].as_array().unwrap().iter().all(|s| {
        s["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "zfs")
    }));
    let (_, v) = get(th.url("/api/v1/skills?tier=1&q=quorum")).await;
    assert!(
        v["skills"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["tier"] == 1)
    );
    let (_, v) = get(th.url("/api/v1/skills?q=stale%20file%20handle")).await;
    assert_eq!(v["skills"][0]["id"], "homelab-nas-mount-stale");
    let (s, _) = get(th.url("/api/v1/skills?tier=7")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Rendering: markdown to HTML with text escaped.
    let (s, v) = get(th.url("/api/v1/skills/homelab-nas-mount-stale")).await;
    assert_eq!(s, StatusCode::OK);
    let html = v["html"].as_str().unwrap();
    assert!(
        html.contains("<h2>Summary</h2>") && html.contains("hangs &amp; <code>ls</code>"),
        "{html}"
    );
    let (s, _) = get(th.url("/api/v1/skills/nope")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    th.stop().await;
}
