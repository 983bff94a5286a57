//! Helpers, one file per concern: per-test namespaces and waiting (here), engines over each
//! store ([`engines`]), webhook bodies in Meta's shape ([`webhooks`]), the broker
//! ([`broker`]), whole stacks and processes ([`stack`]), load over many numbers ([`load`]).

mod binary;
mod broker;
mod browser;
#[macro_use]
mod engines;
mod graph;
mod load;
mod stack;
mod webhooks;

pub use binary::*;
pub use broker::*;
pub use browser::*;
pub use engines::*;
pub use graph::*;
pub use load::*;
pub use stack::*;
pub use webhooks::*;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const PNID: &str = "410000000000088";
pub const WABA: &str = "310000000000077";
pub const BUSINESS: &str = "5215550009999";
pub const ANA: &str = "5215551230001";
pub const LUIS: &str = "5215551230002";

pub fn redis_url() -> String {
    std::env::var("COEXIST_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A namespace no other test uses.
pub fn unique_ns(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "test-{name}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Deletes every key of a namespace when dropped.
pub struct NsGuard(pub String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.0))
            .query(&mut conn)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
    }
}

/// How long a test waits for a stack (or a process) to become ready.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// Checks `check` every 50 ms until it passes; after `within`, fails naming `what` and what
/// `check` last said was missing.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        let missing = match check().await {
            Ok(()) => return,
            Err(missing) => missing,
        };
        assert!(
            std::time::Instant::now() < deadline,
            "waited {within:?} for {what}; still missing: {missing}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
