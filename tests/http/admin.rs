//! The admin page's rules that need no provider: where a sign-in in progress lives, the
//! issuer of the provider's answer, and the headers of every page it shows.

use axum::body::Body;
use axum::http::Request;

use crate::harness::{Answer, Harness, ISSUER};

async fn admin(extra: &[(&str, &str)]) -> Harness {
    let mut vars = vec![("ADMIN_ROLE", "broker-admin")];
    vars.extend_from_slice(extra);
    Harness::with(&vars).await
}

/// `GET /admin` without a session: the provider's sign-in URL's `state`, and the cookie the
/// browser is given for it.
async fn start_sign_in(h: &Harness) -> (String, String) {
    let answer = h.get("/admin", None).await;
    assert_eq!(answer.status, 303, "{}", answer.text);
    let location = answer.headers["location"].to_str().unwrap();
    let state = url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let cookie = answer.headers["set-cookie"].to_str().unwrap();
    let pair = cookie.split(';').next().unwrap().to_owned();
    (state, pair)
}

async fn callback(h: &Harness, query: &str, cookie: Option<&str>) -> Answer {
    let mut request = Request::get(format!("/admin/callback?{query}"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    h.send(request.body(Body::empty()).unwrap()).await
}

/// About 10,000 anonymous visits used to fill the pending sign-in map, and then every operator
/// got 503. Now a sign-in in progress lives in its own browser's cookie: no number of visits
/// keeps an operator out.
#[tokio::test]
async fn anonymous_visits_cannot_lock_operators_out() {
    let h = admin(&[]).await;
    for _ in 0..12_000 {
        assert_eq!(h.get("/admin", None).await.status, 303);
    }
    let (state, cookie) = start_sign_in(&h).await;
    assert!(cookie.starts_with("tb_admin_sign_in="));
    // The operator's callback still finds its sign-in: it gets past the state to the code
    // exchange (the provider is down in this harness, so the sign-in is refused there: 403).
    let answer = callback(&h, &format!("code=c&state={state}"), Some(&cookie)).await;
    assert_eq!(answer.status, 403, "{}", answer.text);
}

/// The sign-in is bound to the browser that started it and to its state, and used once.
#[tokio::test]
async fn a_sign_in_needs_the_cookie_of_the_browser_that_started_it() {
    let h = admin(&[]).await;
    let (state, cookie) = start_sign_in(&h).await;
    let (other_state, _) = start_sign_in(&h).await;
    for (query, cookie) in [
        (format!("code=c&state={state}"), None),
        (format!("code=c&state={other_state}"), Some(cookie.as_str())),
        (
            format!("code=c&state={state}"),
            Some("tb_admin_sign_in=garbage"),
        ),
    ] {
        let answer = callback(&h, &query, cookie).await;
        assert_eq!(answer.status, 400, "{query} {cookie:?}: {}", answer.text);
    }
    let used = callback(&h, &format!("code=c&state={state}"), Some(&cookie)).await;
    let ended = used
        .headers
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().starts_with("tb_admin_sign_in=;"));
    assert!(ended, "the callback spends the sign-in's cookie");
}

/// RFC 9207 on the admin sign-in: where discovery promises `iss`, a response without it, or
/// with any other string (even the issuer with a slash added), is refused before any code is
/// exchanged.
#[tokio::test]
async fn the_admin_callback_checks_the_responses_issuer_exactly() {
    let h = admin(&[("TEST_ISS_SUPPORTED", "1")]).await;
    let encoded = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    for iss in [
        None,
        Some(format!("{ISSUER}/")),
        Some("http://evil.test".to_owned()),
    ] {
        let (state, cookie) = start_sign_in(&h).await;
        let query = match &iss {
            Some(iss) => format!("code=c&state={state}&iss={}", encoded(iss)),
            None => format!("code=c&state={state}"),
        };
        let answer = callback(&h, &query, Some(&cookie)).await;
        assert_eq!(answer.status, 400, "{iss:?}: {}", answer.text);
    }
    let (state, cookie) = start_sign_in(&h).await;
    let query = format!("code=c&state={state}&iss={}", encoded(ISSUER));
    let answer = callback(&h, &query, Some(&cookie)).await;
    assert_eq!(
        answer.status, 403,
        "past the issuer check to the exchange: {}",
        answer.text
    );
}

/// Every error page (sign-in refused, 401, 403, 404, 503 …) carries the same headers as the
/// table: no framing, no scripts, no caching.
#[tokio::test]
async fn every_admin_error_page_has_the_pages_protections() {
    let h = admin(&[]).await;
    let (state, cookie) = start_sign_in(&h).await;
    let pages = [
        callback(&h, "state=made-up&code=c", None).await,
        callback(&h, &format!("code=c&state={state}"), Some(&cookie)).await,
        h.request(
            "POST",
            "/admin/tokens/x/revoke",
            None,
            Some(("application/x-www-form-urlencoded", "csrf=x".into())),
        )
        .await,
        Harness::new().await.get("/admin", None).await,
    ];
    let statuses: Vec<u16> = pages.iter().map(|p| p.status).collect();
    assert_eq!(statuses, [400, 403, 401, 404]);
    for page in pages {
        assert_eq!(page.headers["x-frame-options"], "DENY", "{}", page.status);
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert_eq!(page.headers["cache-control"], "no-store");
    }
}

/// The admin pages word their errors from the one error table: each page shows its row's
/// status, message and the code a JSON client would get for the same case.
#[tokio::test]
async fn admin_error_pages_show_their_rows_code_and_message() {
    let h = admin(&[]).await;
    let (state, cookie) = start_sign_in(&h).await;
    let unsigned_revoke = h
        .request(
            "POST",
            "/admin/tokens/x/revoke",
            None,
            Some(("application/x-www-form-urlencoded", "csrf=x".into())),
        )
        .await;
    let cases = [
        (
            callback(&h, "state=made-up&code=c", None).await,
            400,
            "invalid_state",
            "The sign-in was refused, expired or already used.",
        ),
        (
            callback(&h, &format!("code=c&state={state}"), Some(&cookie)).await,
            403,
            "forbidden",
            "Sign-in refused.",
        ),
        (
            unsigned_revoke,
            401,
            "unauthorized",
            "Sign in at /admin first",
        ),
        (
            Harness::new().await.get("/admin", None).await,
            404,
            "not_found",
            "The admin page is not enabled (ADMIN_ROLE).",
        ),
    ];
    for (page, status, code, words) in cases {
        assert_eq!(page.status, status, "{}", page.text);
        assert!(
            page.text
                .contains(&format!("<code id=\"code\">{code}</code>")),
            "{status}: {}",
            page.text
        );
        assert!(page.text.contains(words), "{status}: {}", page.text);
    }
}
