//! Runs the Rust echo bot in process and talks to it like the bridge does.

mod common;

use std::time::Duration;

#[tokio::test]
async fn rust_echo_bot_echoes_media_answers_dtmf_and_hangs_up_on_hash() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(examples::serve_echo(listener));

    let url = format!("ws://{addr}/");
    let ws = tokio::time::timeout(common::STEP, common::connect(&url))
        .await
        .expect("connect timed out")
        .expect("connect failed");
    common::echo_conversation(ws).await;

    server.abort();
}

#[tokio::test]
async fn rust_echo_bot_serves_concurrent_sessions() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(examples::serve_echo(listener));

    let url = format!("ws://{addr}/");
    let mut calls = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        calls.push(tokio::spawn(async move {
            let ws = tokio::time::timeout(common::STEP, common::connect(&url))
                .await
                .expect("connect timed out")
                .expect("connect failed");
            common::echo_conversation(ws).await;
        }));
    }
    for call in calls {
        tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("call timed out")
            .expect("call panicked");
    }

    server.abort();
}
