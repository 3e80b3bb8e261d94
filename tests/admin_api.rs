//! Account management and the live view, as an admin uses them.

mod common;

use common::{Client, TestServer};
use serde_json::{Value, json};

async fn admin(server: &TestServer) -> (reqwest::Client, String) {
    server.add_user("chef", "Chefen", "admin", "admin password 123").await;
    (reqwest::Client::new(), server.login("chef", "admin password 123").await)
}

#[tokio::test]
async fn manage_accounts() {
    let server = TestServer::start().await;
    let (http, cookie) = admin(&server).await;
    let post = |path: &str, body: Value| http.post(server.url(path)).header("cookie", &cookie).json(&body).send();

    let created = post(
        "/api/v1/users",
        json!({"username": "anna", "display_name": "Anna", "role": "advisor", "password": "anna password 1"}),
    )
    .await
    .expect("post");
    assert_eq!(created.status().as_u16(), 201);
    let body: Value = created.json().await.expect("json");
    assert_eq!((body["username"].as_str(), body["role"].as_str()), (Some("anna"), Some("advisor")));
    let again = post("/api/v1/users", json!({"username": "anna", "role": "advisor", "password": "anna password 1"}))
        .await
        .expect("post");
    assert_eq!(again.status().as_u16(), 409);
    let weak =
        post("/api/v1/users", json!({"username": "bo", "role": "advisor", "password": "short"})).await.expect("post");
    assert_eq!(weak.status().as_u16(), 400);
    let bad_role = post("/api/v1/users", json!({"username": "bo", "role": "root", "password": "long enough pw"}))
        .await
        .expect("post");
    assert_eq!(bad_role.status().as_u16(), 400);
    let bad_name = post("/api/v1/users", json!({"username": "Bo Ek", "role": "advisor", "password": "long enough pw"}))
        .await
        .expect("post");
    assert_eq!(bad_name.status().as_u16(), 400);

    let list: Vec<Value> = http
        .get(server.url("/api/v1/users"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = list.iter().map(|u| u["username"].as_str().expect("name")).collect();
    assert_eq!(names, ["admin", "anna", "chef"], "the first-start admin is there too");
    assert!(list.iter().all(|u| u.get("password_hash").is_none()), "hashes never leave the server");

    // An advisor may not manage accounts.
    let anna_cookie = server.login("anna", "anna password 1").await;
    let denied = http.get(server.url("/api/v1/users")).header("cookie", &anna_cookie).send().await.expect("get");
    assert_eq!(denied.status().as_u16(), 403);
    let anonymous = http.get(server.url("/api/v1/users")).send().await.expect("get");
    assert_eq!(anonymous.status().as_u16(), 401);

    // A password reset closes Anna's console and ends her sessions.
    let mut console = Client::connect(server.addr, "/ws/advisor", Some(&anna_cookie)).await;
    console.expect("welcome").await;
    let reset = post("/api/v1/users/anna/password", json!({"password": "a brand new password"})).await.expect("post");
    assert_eq!(reset.status().as_u16(), 204);
    assert_eq!(console.closed().await, Some(1008));
    let me = http.get(server.url("/api/v1/me")).header("cookie", &anna_cookie).send().await.expect("get");
    assert_eq!(me.status().as_u16(), 401);
    server.login("anna", "a brand new password").await;

    let missing =
        post("/api/v1/users/nobody/password", json!({"password": "a brand new password"})).await.expect("post");
    assert_eq!(missing.status().as_u16(), 404);
    let removed = http.delete(server.url("/api/v1/users/anna")).header("cookie", &cookie).send().await.expect("delete");
    assert_eq!(removed.status().as_u16(), 204);
    let self_remove =
        http.delete(server.url("/api/v1/users/chef")).header("cookie", &cookie).send().await.expect("delete");
    assert_eq!(self_remove.status().as_u16(), 400);
    let list: Vec<Value> = http
        .get(server.url("/api/v1/users"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(list.len(), 2);
}

#[tokio::test]
async fn live_figures_over_http_and_websocket() {
    let server = TestServer::start_with(common::Backend::Sqlite, |c| c.chat.max_chats_per_advisor = 1).await;
    let (http, cookie) = admin(&server).await;
    let mut live_socket = Client::connect(server.addr, "/ws/admin", Some(&cookie)).await;
    let first = live_socket.expect("live").await;
    assert_eq!(first["waiting"], 0);

    let mut anna = server.advisor("anna", true).await;
    let _bo = server.advisor("bo", false).await;
    let (_c1, _) = server.queued_citizen("Ada").await;
    anna.expect("assigned").await;
    let (_c2, _) = server.queued_citizen("Bertil").await;

    let live: Value = http
        .get(server.url("/api/v1/stats/live"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(live["waiting"], 1);
    assert_eq!(live["active_chats"], 1);
    assert_eq!(live["advisors_online"], 2);
    assert_eq!(live["advisors_busy"], 1, "anna is at her limit of one");
    assert_eq!(live["advisors_available"], 0);
    assert_eq!(live["advisors_away"], 1);
    assert_eq!(live["admission"]["open"], true);
    let anna_row =
        live["advisors"].as_array().expect("list").iter().find(|a| a["username"] == "anna").expect("anna").clone();
    assert_eq!((anna_row["status"].as_str(), anna_row["active_chats"].as_u64()), (Some("available"), Some(1)));

    // The socket catches up with the same picture.
    loop {
        let frame = live_socket.expect("live").await;
        if frame["waiting"] == 1 && frame["active_chats"] == 1 {
            break;
        }
    }
    let advisor_cookie = server.login("anna", "advisor password 1").await;
    let denied =
        http.get(server.url("/api/v1/stats/live")).header("cookie", &advisor_cookie).send().await.expect("get");
    assert_eq!(denied.status().as_u16(), 403);
}
