//! The dashboard in a real browser: Debian's headless Chromium driven over
//! W3C WebDriver (`chromedriver`, spoken with plain HTTP here). It signs in,
//! keeps the incident list open while a log line on an agent's node opens an
//! incident (the row arrives over server-sent events, no reload), opens the
//! incident, checks that log-derived text containing `<script>` is shown as
//! text and never runs, and acknowledges it with the page's button.
//!
//! Needs `chromium` and `chromium-driver` (installed by `.ci/run`); without
//! them the test is skipped, except under `CI=true` where it fails.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{eventually, http_client};
use crate::incidents::{append, hub_with_logging_agent};

/// A chromedriver process; killed on drop.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver session.
struct Browser {
    http: reqwest::Client,
    session: String,
    base: String,
}

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut rb = self.http.request(method, &url);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let v: Value = rb.send().await.unwrap().json().await.unwrap();
        if let Some(err) = v["value"].get("error") {
            panic!("WebDriver {path}: {err} {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn find(&self, css: &str) -> Option<String> {
        let url = format!("{}/session/{}/element", self.base, self.session);
        let v: Value = self
            .http
            .post(&url)
            .json(&json!({"using": "css selector", "value": css}))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["value"]
            .as_object()?
            .iter()
            .find(|(k, _)| k.starts_with("element-"))
            .and_then(|(_, id)| id.as_str().map(str::to_string))
    }

    async fn wait_find(&self, css: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(Instant::now() < deadline, "no element {css}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, el: &str, text: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Finds `css` and returns its text, finding it again if the page
    /// replaced the element in between (live updates do).
    async fn text_of(&self, css: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(el) = self.find(css).await {
                let url = format!("{}/session/{}/element/{el}/text", self.base, self.session);
                let v: Value = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if let Some(t) = v["value"].as_str() {
                    return t.to_string();
                }
            }
            assert!(Instant::now() < deadline, "no text for {css}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks `css`, finding it again if it went stale.
    async fn click_css(&self, css: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(el) = self.find(css).await {
                let url = format!("{}/session/{}/element/{el}/click", self.base, self.session);
                let v: Value = self
                    .http
                    .post(&url)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if v["value"].get("error").is_none() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "cannot click {css}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn script(&self, js: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
        .await
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    async fn quit(&self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}

async fn start_browser() -> Option<(Driver, Browser)> {
    wingman_agent::tls::install_default_provider();
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI needs chromium and chromium-driver (apt install chromium chromium-driver)"
        );
        eprintln!("skipped: chromium or chromedriver is not installed");
        return None;
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let d = Driver {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(20), "chromedriver ready", || {
        let http = http.clone();
        let url = format!("{}/status", d.base);
        async move {
            let v: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            v["value"]["ready"].as_bool().filter(|r| *r).map(|_| ())
        }
    })
    .await;
    let profile = tempfile::tempdir().unwrap();
    let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", format!("--user-data-dir={}", profile.path().display())]
        }
    }}});
    let v: Value = http
        .post(format!("{}/session", d.base))
        .json(&caps)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = v["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
        .to_string();
    // The profile dir must outlive the session; the OS cleans /tmp.
    std::mem::forget(profile);
    let base = d.base.clone();
    Some((
        d,
        Browser {
            http,
            session,
            base,
        },
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium_lists_opens_escapes_and_acknowledges() {
    let Some((_driver, b)) = start_browser().await else {
        return;
    };
    let (mut th, mut agent, _agent_id, log) = hub_with_logging_agent().await;
    wingman_hub::commands::add_user(&th.hub, "admin", "correct-horse-battery", "admin", false)
        .await
        .unwrap();

    // Sign in.
    b.goto(&th.url("/login")).await;
    let user = b
        .wait_find("input[name=username]", Duration::from_secs(10))
        .await;
    b.type_into(&user, "admin").await;
    let pw = b
        .wait_find("input[name=password]", Duration::from_secs(5))
        .await;
    b.type_into(&pw, "correct-horse-battery").await;
    b.click_css("button[type=submit]", Duration::from_secs(5))
        .await;
    b.wait_find("nav .who", Duration::from_secs(10)).await;

    // The incident list is open and live before anything happens.
    b.goto(&th.url("/incidents")).await;
    b.wait_find("#live[data-state=on]", Duration::from_secs(10))
        .await;
    let t0 = Instant::now();
    append(
        &log,
        &[
            "kernel: Out of memory: Killed process 4242 (<script>window.__xss=1</script>) total-vm:8000000kB, anon-rss:4000000kB",
        ],
    );
    // Pushed to the open page over server-sent events: no reload.
    let link = "#incidents tbody tr[data-id] a";
    b.wait_find(link, Duration::from_secs(15)).await;
    let pushed = t0.elapsed();
    eprintln!("incident row pushed to the open list {pushed:?} after the line was written");
    let title = b.text_of(link, Duration::from_secs(5)).await;
    assert!(!title.is_empty());
    b.click_css(link, Duration::from_secs(5)).await;

    // The incident page: the log-derived <script> is text, and never ran.
    b.wait_find("#state", Duration::from_secs(10)).await;
    assert_eq!(b.text_of("h1", Duration::from_secs(5)).await, title);
    let src = b.source().await;
    assert!(src.contains("&lt;script&gt;"), "escaped template expected");
    assert!(
        !src.contains("<script>window.__xss"),
        "raw script in the page"
    );
    assert_eq!(
        b.script("return window.__xss === undefined;").await,
        json!(true)
    );
    let injected = b
        .script("return Array.from(document.scripts).filter(s => !s.src).length;")
        .await;
    assert_eq!(injected, json!(0), "inline scripts on the page");
    let body_text = b.script("return document.body.innerText;").await;
    assert!(
        body_text.as_str().unwrap_or("").contains("<script>"),
        "the template should be visible as text"
    );

    // Acknowledge with the page's button (a CSRF-protected form post).
    assert_eq!(b.text_of("#state", Duration::from_secs(5)).await, "open");
    b.click_css("#ack", Duration::from_secs(5)).await;
    eventually(Duration::from_secs(10), "acknowledged on the page", || {
        let b = &b;
        async move {
            (b.text_of("#state", Duration::from_secs(5)).await == "acknowledged").then_some(())
        }
    })
    .await;
    let key = th.api_key().await;
    let list: Value = http_client()
        .get(th.url("/api/v1/incidents?state=acknowledged"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 1, "{list}");
    let incident_url = b.script("return window.location.href;").await;
    let incident_url = incident_url.as_str().unwrap().to_owned();

    // The policy page: switch to Assist mode with the page's form.
    b.goto(&th.url("/settings/policy")).await;
    b.wait_find("#mode", Duration::from_secs(10)).await;
    b.script("document.getElementById('mode').value = 'assist'; return true;")
        .await;
    b.click_css("#save-policy", Duration::from_secs(5)).await;
    eventually(Duration::from_secs(10), "policy saved", || {
        let th = &th;
        async move { (th.hub.control.policy().0.mode == "assist").then_some(()) }
    })
    .await;

    // Propose a plan on the incident page (the JSON form holds a ready
    // example: a manual step on the node), then tick it off.
    b.goto(&incident_url).await;
    b.wait_find("#plan-from-operator", Duration::from_secs(10))
        .await;
    b.script("document.getElementById('plan-from-operator').submit(); return true;")
        .await;
    b.wait_find("article.plan .badge.risk-manual", Duration::from_secs(10))
        .await;
    let status = b
        .text_of("article.plan [data-plan-status]", Duration::from_secs(5))
        .await;
    assert_eq!(status, "active");
    b.click_css(
        "article.plan form[action$='/done'] input[type=checkbox]",
        Duration::from_secs(5),
    )
    .await;
    b.click_css("article.plan button.done", Duration::from_secs(5))
        .await;
    eventually(
        Duration::from_secs(10),
        "plan completed on the page",
        || {
            let b = &b;
            async move {
                (b.text_of("article.plan [data-plan-status]", Duration::from_secs(5))
                    .await
                    == "completed")
                    .then_some(())
            }
        },
    )
    .await;
    let state = b
        .text_of("article.plan .step-state", Duration::from_secs(5))
        .await;
    assert_eq!(state, "done");
    // The other pages render in the browser too.
    for (path, css) in [
        ("/skills", "table.nodes"),
        ("/clusters", "h1"),
        ("/settings/notifications", "textarea[name=doc]"),
        ("/settings/policy", "table"),
        ("/", "h1"),
    ] {
        b.goto(&th.url(path)).await;
        b.wait_find(css, Duration::from_secs(10)).await;
    }
    b.quit().await;
    agent.stop().await;
    th.shutdown.cancel();
    th.stop().await;
}
