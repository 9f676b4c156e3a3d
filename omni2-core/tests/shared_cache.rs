//! `cache.redis`: two real `omni2` processes sharing tool results through a real
//! `redis-server`, against the real Python MCP server (its `counter` tool increments
//! upstream, so an unchanged value proves a hit).

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

async fn call(http: &reqwest::Client, o: &Omni2, tool: &str, args: Value) -> Value {
    let r = with(
        http.post(o.url(&format!("/api/v1/mcp/servers/py/tools/{tool}/call"))),
        &user(),
    )
    .json(&args)
    .send()
    .await
    .expect("request");
    assert_eq!(r.status(), 200, "{tool} {args}");
    r.json().await.expect("json")
}

/// The value of one exact sample line (`name{labels}`), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn healthy(http: &reqwest::Client, o: &Omni2) {
    eventually("py healthy", Duration::from_secs(20), || async {
        let s = server_status(http, o, "py").await;
        (s["state"] == "healthy").then_some(())
    })
    .await;
}

#[tokio::test]
async fn replicas_share_results_through_redis_and_survive_its_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut redis = test_support::RedisServer::start(dir.path().to_owned());
    let mcp = McpServer::start(&[]);
    let extra = format!(
        "cache:\n  redis:\n    url: {}\n    key_prefix: \"omni2-test:\"\n    command_timeout: 200ms\n",
        redis.url()
    );
    let yaml = config(&[("py", &mcp.url())], &extra);
    let (a, b) = (Omni2::start(&yaml, None), Omni2::start(&yaml, None));
    let http = http_client();
    healthy(&http, &a).await;
    healthy(&http, &b).await;

    // A calls upstream and stores; B, with an empty local cache, reads A's result.
    let first = call(&http, &a, "counter", json!({})).await;
    assert_eq!(first["cached"], false, "{first}");
    let on_b = call(&http, &b, "counter", json!({})).await;
    assert_eq!(on_b["cached"], true, "served from Redis: {on_b}");
    assert_eq!(
        on_b["structuredContent"], first["structuredContent"],
        "the counter did not increment"
    );
    // The entry in Redis expires with the tool's TTL (1 m in the test config).
    let keys = redis.cli(&["KEYS", "omni2-test:*"]);
    let key = keys.lines().next().expect("a key in Redis").to_owned();
    assert_eq!(key.len(), "omni2-test:".len() + 64, "{keys}");
    let pttl: i64 = redis.cli(&["PTTL", &key]).parse().expect("pttl");
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");

    // Different arguments miss on both levels; the same ones hit on the other replica.
    let x = call(&http, &a, "echo", json!({"text": "x"})).await;
    let y = call(&http, &b, "echo", json!({"text": "y"})).await;
    assert_eq!(
        (x["cached"].clone(), y["cached"].clone()),
        (json!(false), json!(false))
    );
    assert_ne!(x["content"], y["content"]);
    let x_on_b = call(&http, &b, "echo", json!({"text": "x"})).await;
    assert_eq!(x_on_b["cached"], true, "{x_on_b}");
    assert_eq!(x_on_b["content"], x["content"]);
    // isError results are never stored, here or in Redis.
    let keys_before = redis.cli(&["DBSIZE"]);
    let f = call(&http, &a, "fail", json!({})).await;
    assert_eq!(
        (f["isError"].clone(), f["cached"].clone()),
        (json!(true), json!(false))
    );
    let f_on_b = call(&http, &b, "fail", json!({})).await;
    assert_eq!(f_on_b["cached"], false, "{f_on_b}");
    assert_eq!(redis.cli(&["DBSIZE"]), keys_before);

    let errors = |text: &str, op: &str| {
        sample(
            text,
            &format!("omni2_cache_redis_errors_total{{operation=\"{op}\"}}"),
        )
    };
    let before = b.metrics(&http).await;
    assert_eq!((errors(&before, "get"), errors(&before, "set")), (0.0, 0.0));

    // Redis gone: calls still answer (upstream, then the local cache), errors are counted.
    redis.kill();
    let z = call(&http, &b, "echo", json!({"text": "z"})).await;
    assert_eq!(
        (z["cached"].clone(), z["isError"].clone()),
        (json!(false), json!(false))
    );
    let z_again = call(&http, &b, "echo", json!({"text": "z"})).await;
    assert_eq!(z_again["cached"], true, "the local cache still serves");
    let c_on_a = call(&http, &a, "counter", json!({})).await;
    assert_eq!(c_on_a["cached"], true, "A's local entry");
    let after = b.metrics(&http).await;
    assert!(errors(&after, "get") >= 1.0, "{after}");
    assert!(errors(&after, "set") >= 1.0, "{after}");
    test_support::assert_promtool_metrics(&after);

    // Back on the same port: sharing resumes without a restart.
    redis.restart();
    eventually("B stores in Redis again", Duration::from_secs(20), || {
        let (http, b) = (&http, &b);
        let redis = &redis;
        async move {
            let text = format!("w{}", unix_now());
            call(http, b, "echo", json!({"text": text})).await;
            (redis.cli(&["DBSIZE"]) != "0").then_some(())
        }
    })
    .await;
}
