//! Signing in and out, and who may open the advisor socket.

mod common;

use common::{Client, TestServer};
use serde_json::json;

#[tokio::test]
async fn login_me_logout() {
    let server = TestServer::start().await;
    server.add_user("anna", "Anna", "advisor", "a good long password").await;
    let http = reqwest::Client::new();

    let wrong = http
        .post(server.url("/api/v1/login"))
        .json(&json!({"username": "anna", "password": "not the password"}))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let wrong_body: serde_json::Value = wrong.json().await.expect("json");
    let unknown = http
        .post(server.url("/api/v1/login"))
        .json(&json!({"username": "nobody", "password": "not the password"}))
        .send()
        .await
        .expect("request");
    assert_eq!(unknown.status().as_u16(), 401);
    let unknown_body: serde_json::Value = unknown.json().await.expect("json");
    assert_eq!(wrong_body, unknown_body, "no hint whether the account exists");

    let malformed = http
        .post(server.url("/api/v1/login"))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("request");
    assert_eq!(malformed.status().as_u16(), 400);

    let ok = http
        .post(server.url("/api/v1/login"))
        .json(&json!({"username": "anna", "password": "a good long password"}))
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status().as_u16(), 200);
    let set_cookie = ok.headers()["set-cookie"].to_str().expect("ascii").to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().expect("pair").to_owned();

    let me: serde_json::Value = http
        .get(server.url("/api/v1/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me, json!({"username": "anna", "display_name": "Anna", "role": "advisor"}));

    let mut socket = Client::connect(server.addr, "/ws/advisor", Some(&cookie)).await;
    socket.expect("welcome").await;
    let out = http.post(server.url("/api/v1/logout")).header("cookie", &cookie).send().await.expect("logout");
    assert_eq!(out.status().as_u16(), 204);
    assert_eq!(socket.closed().await, Some(1008), "logging out closes the user's sockets");
    let me = http.get(server.url("/api/v1/me")).header("cookie", &cookie).send().await.expect("me");
    assert_eq!(me.status().as_u16(), 401);
}

#[tokio::test]
async fn the_advisor_socket_needs_a_session() {
    let server = TestServer::start().await;
    for cookie in [None, Some("kc_session=forged0000000000000000000000000000")] {
        let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/ws/advisor",
            server.addr
        ))
        .expect("request");
        if let Some(c) = cookie {
            request.headers_mut().insert("cookie", c.parse().expect("header"));
        }
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 401),
            other => panic!("expected 401, got {:?}", other.map(|_| "a connection")),
        }
    }
}

#[tokio::test]
async fn a_second_console_replaces_the_first() {
    let server = TestServer::start().await;
    let mut first = server.advisor("anna", true).await;
    let cookie = first.cookie.clone().expect("cookie");
    let mut second = Client::connect(server.addr, "/ws/advisor", Some(&cookie)).await;
    assert_eq!(second.expect("welcome").await["status"], "available");
    assert_eq!(first.closed().await, Some(4001));
}
