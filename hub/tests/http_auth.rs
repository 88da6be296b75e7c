//! HTTP authentication: 401 without credentials, sessions, CSRF and login
//! throttling, against a real listener.

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER, SET_COOKIE};

use crate::common::{TestHub, http_client};

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let first = v.split(';').next()?;
            let (k, val) = first.split_once('=')?;
            (k == name).then(|| val.to_string())
        })
}

fn hidden_csrf(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("csrf field") + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

/// Fetches the login form; returns (login csrf cookie, form token).
async fn login_form(th: &TestHub) -> (String, String) {
    let resp = http_client().get(th.url("/login")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = cookie_value(resp.headers(), "wingman_login_csrf").unwrap();
    let html = resp.text().await.unwrap();
    (cookie, hidden_csrf(&html))
}

async fn login(th: &TestHub, user: &str, password: &str) -> reqwest::Response {
    let (cookie, token) = login_form(th).await;
    http_client()
        .post(th.url("/login"))
        .header("cookie", format!("wingman_login_csrf={cookie}"))
        .form(&[
            ("csrf", token.as_str()),
            ("username", user),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_pages_require_authentication() {
    let mut th = TestHub::start(|_| {}).await;
    let c = http_client();
    for path in ["/api/v1/nodes", "/api/v1/nodes/x"] {
        let r = c.get(th.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "authentication required");
    }
    let r = c
        .post(th.url("/api/v1/nodes/x/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(th.url("/api/v1/nodes"))
        .bearer_auth("wm_not-a-real-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Pages redirect to the login form.
    let r = c.get(th.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/login");
    // Health needs nothing; unknown paths are 404; headers are hardened.
    let r = c.get(th.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let r = c.get(th.url("/static/../Cargo.toml")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A valid API key works.
    let key = th.api_key().await;
    let r = c
        .get(th.url("/api/v1/nodes"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    th.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_csrf_and_one_time_password_flow() {
    let mut th = TestHub::start(|_| {}).await;
    wingman_hub::commands::add_user(&th.hub, "alice", "first-password-1", "admin", true)
        .await
        .unwrap();
    let c = http_client();

    // Login without the CSRF cookie is refused.
    let (_, token) = login_form(&th).await;
    let r = c
        .post(th.url("/login"))
        .form(&[
            ("csrf", token.as_str()),
            ("username", "alice"),
            ("password", "first-password-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // One-time password: signing in leads to the password page.
    let r = login(&th, "alice", "first-password-1").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/account/password");
    let set = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect::<Vec<_>>();
    let session_line = set
        .iter()
        .find(|l| l.starts_with("wingman_session="))
        .unwrap();
    assert!(
        session_line.contains("HttpOnly") && session_line.contains("SameSite=Strict"),
        "{session_line}"
    );
    let session = cookie_value(r.headers(), "wingman_session").unwrap();
    let jar = format!("wingman_session={session}");

    // Until the password is changed the dashboard and API refuse.
    let r = c
        .get(th.url("/"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[LOCATION], "/account/password");
    let r = c
        .get(th.url("/api/v1/nodes"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let page = c
        .get(th.url("/account/password"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_csrf(&page);
    // Without the CSRF token: 403.
    let r = c
        .post(th.url("/account/password"))
        .header("cookie", &jar)
        .form(&[
            ("current", "first-password-1"),
            ("new_password", "second-password-2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // With it: changed.
    let r = c
        .post(th.url("/account/password"))
        .header("cookie", &jar)
        .form(&[
            ("csrf", csrf.as_str()),
            ("current", "first-password-1"),
            ("new_password", "second-password-2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = c
        .get(th.url("/"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("No nodes enrolled yet"));

    // A state-changing form without a valid CSRF token is refused.
    let r = c
        .post(th.url("/nodes/some-id/revoke"))
        .header("cookie", &jar)
        .form(&[("csrf", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .post(th.url("/api/v1/nodes/some-id/revoke"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .post(th.url("/logout"))
        .header("cookie", &jar)
        .form(&[("csrf", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Logout with the token invalidates the session on the server.
    let csrf = hidden_csrf(&html);
    let r = c
        .post(th.url("/logout"))
        .header("cookie", &jar)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = c
        .get(th.url("/api/v1/nodes"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    th.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_throttled() {
    let mut th = TestHub::start(|c| c.auth.login_max_failures = 3).await;
    wingman_hub::commands::add_user(&th.hub, "bob", "bobs-password-1", "viewer", false)
        .await
        .unwrap();
    for _ in 0..3 {
        let r = login(&th, "bob", "wrong-password").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("Wrong user name or password")
        );
    }
    // Further wrong attempts meet a growing delay (1 s, 2 s, 4 s, ...). A slow
    // debug-build Argon2 check can outlast the first delay, so keep trying
    // until one is refused with 429.
    let mut refused = None;
    for _ in 0..6 {
        let r = login(&th, "bob", "wrong-password").await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = refused.expect("no attempt was throttled");
    let wait: u64 = r.headers()[RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=32).contains(&wait), "{wait}");
    // Even the right password must wait (a refused attempt costs no hashing,
    // so this one arrives well inside the delay).
    let r = login(&th, "bob", "bobs-password-1").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let r = login(&th, "bob", "bobs-password-1").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    th.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_answered_503_with_retry_after_and_health_stays_up() {
    let mut th = TestHub::start(|c| c.http.max_inflight = 0).await;
    let c = http_client();
    let r = c.get(th.url("/api/v1/nodes")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[RETRY_AFTER], "2");
    let r = c.get(th.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    th.stop().await;
}
