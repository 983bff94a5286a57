//! Whole stacks in this process, `coexist` processes, and HTTP to them.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "test-app-secret";

/// Configuration for a test stack: its own namespace, ports picked by the OS.
pub fn stack_config(ns: &str, extra: &[(&str, &str)]) -> coexist::runtime::config::Config {
    let mut vars: std::collections::HashMap<String, String> = [
        ("COEXIST_NAMESPACE", ns),
        ("COEXIST_APP_SECRET", SECRET),
        ("COEXIST_VERIFY_TOKEN", "verify-me"),
        ("COEXIST_LISTEN", "127.0.0.1:0"),
        ("COEXIST_ADMIN_LISTEN", "127.0.0.1:0"),
        ("COEXIST_PARTITIONS", "4"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.insert("COEXIST_AMQP_URL".into(), amqp_url());
    vars.insert("COEXIST_REDIS_URL".into(), redis_url());
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    coexist::runtime::config::Config::load(None, |k| vars.get(k).cloned())
        .expect("test configuration")
}

/// An ingress and workers in this process, in their own namespace.
pub struct Stack {
    pub ns: String,
    pub config: coexist::runtime::config::Config,
    pub ingress: coexist::services::ingress::Running,
    pub workers: Vec<coexist::services::worker::Worker>,
    shutdown: CancellationToken,
    _redis: NsGuard,
    _amqp: AmqpNsGuard,
}

impl Stack {
    pub async fn start(name: &str, workers: usize, extra: &[(&str, &str)]) -> Stack {
        let ns = unique_ns(name);
        let config = stack_config(&ns, extra);
        let shutdown = CancellationToken::new();
        let ingress = coexist::services::ingress::start(&config, &shutdown)
            .await
            .unwrap();
        let mut ws = Vec::new();
        for _ in 0..workers {
            ws.push(
                coexist::services::worker::start(&config, &shutdown)
                    .await
                    .unwrap(),
            );
        }
        let stack = Stack {
            ns: ns.clone(),
            config,
            ingress,
            workers: ws,
            shutdown,
            _redis: NsGuard(ns.clone()),
            _amqp: AmqpNsGuard(ns),
        };
        stack.wait_ready().await;
        stack
    }

    /// Waits until the ingress is connected and the workers share every partition (generously:
    /// a loaded machine is slow to connect and rebalance).
    pub async fn wait_ready(&self) {
        let partitions = self.config.partitions as usize;
        eventually(READY_WITHIN, "the stack to be ready", || async {
            let shares: Vec<Vec<u16>> = self.workers.iter().map(|w| w.owned()).collect();
            let owned: usize = shares.iter().map(Vec::len).sum();
            if !self.ingress.link.is_connected() {
                return Err("the ingress is not connected to RabbitMQ".into());
            }
            if !self.workers.is_empty() && owned != partitions {
                return Err(format!(
                    "the workers own {owned} of {partitions} partitions: {shares:?}"
                ));
            }
            if let Some(i) = shares.iter().position(Vec::is_empty) {
                return Err(format!("worker {i} owns no partition yet: {shares:?}"));
            }
            Ok(())
        })
        .await;
    }

    /// Posts a body signed with the test secret; returns the status.
    pub async fn post(&self, body: &str) -> u16 {
        post_signed(self.ingress.addr, body).await
    }

    /// Posts until answered 200 (as Meta retries); panics after `within`.
    pub async fn post_until_ok(&self, body: &str, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let status = self.post(body).await;
            if status == 200 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never accepted (last status {status})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for w in self.workers {
            w.stopped().await.expect("the worker stopped cleanly");
        }
        self.ingress
            .stopped()
            .await
            .expect("the ingress stopped cleanly");
    }
}

/// Posts `body` (signed) to `addr` until it is answered `200`; fails naming `what` after `within`.
pub async fn accepted_within(addr: std::net::SocketAddr, body: &str, within: Duration, what: &str) {
    eventually(within, what, || async {
        match post_signed(addr, body).await {
            200 => Ok(()),
            s => Err(format!("status {s}")),
        }
    })
    .await;
}

/// Posts a body signed with the test secret to `addr`'s `/webhook`: the status.
pub async fn post_signed(addr: std::net::SocketAddr, body: &str) -> u16 {
    let sig = coexist::services::ingress::sign(SECRET, body.as_bytes());
    http(
        addr,
        "POST",
        "/webhook",
        &[("X-Hub-Signature-256", sig)],
        body.as_bytes(),
    )
    .await
    .0
}

/// A minimal HTTP/1.1 request over a fresh connection: (status, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // A server refusing a large body may close before reading it all: write what it takes.
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A `coexist` process with JSON logs; its bound addresses are read from its log as it starts.
pub struct Process {
    pub child: std::process::Child,
    /// Where `/healthz`, `/readyz` and `/metrics` answer: the worker's admin address (worker,
    /// serve), or the ingress's admin address (ingress).
    pub admin: std::net::SocketAddr,
    /// `addr` of "ingress listening" (ingress, serve).
    pub listen: Option<std::net::SocketAddr>,
    log: Arc<std::sync::Mutex<String>>,
}

impl Process {
    /// Starts `coexist <command>` with only `env` (plus JSON logs and ports picked by the OS) and
    /// waits until it has logged its addresses.
    pub async fn start(command: &str, env: &[(&str, &str)]) -> Process {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_coexist"));
        cmd.arg(command)
            .env_clear()
            .env("COEXIST_AMQP_URL", amqp_url())
            .env("COEXIST_REDIS_URL", redis_url())
            .env("COEXIST_LISTEN", "127.0.0.1:0")
            .env("COEXIST_ADMIN_LISTEN", "127.0.0.1:0")
            // `serve` runs the gate (and the console with a token): never on a fixed port, so
            // processes of tests running side by side do not collide.
            .env("COEXIST_GATE_LISTEN", "127.0.0.1:0")
            .env("COEXIST_CONSOLE_LISTEN", "127.0.0.1:0")
            .env("COEXIST_LOG", "warn,coexist=info")
            .env("COEXIST_LOG_FORMAT", "json")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<Value>();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let (wants_admin, wants_listen) = (command != "ingress", command != "worker");
        let (mut admin, mut listen) = (None, None);
        let deadline = std::time::Instant::now() + READY_WITHIN;
        while (wants_admin && admin.is_none()) || (wants_listen && listen.is_none()) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(v) = rx.recv_timeout(left) else {
                panic!(
                    "coexist {command} did not log its addresses within {READY_WITHIN:?}:\n{}",
                    log.lock().unwrap()
                );
            };
            let fields = &v["fields"];
            match fields["message"].as_str() {
                Some("worker started") => {
                    admin = fields["admin"].as_str().map(|a| a.parse().unwrap())
                }
                Some("ingress listening") => {
                    listen = fields["addr"].as_str().map(|a| a.parse().unwrap());
                    if let Some(a) = fields["admin"].as_str() {
                        admin = Some(a.parse().unwrap());
                    }
                }
                _ => {}
            }
        }
        // Keep draining, so the process never blocks on a full pipe.
        std::thread::spawn(move || rx.into_iter().for_each(drop));
        Process {
            child,
            admin: admin.expect("an admin address"),
            listen,
            log,
        }
    }

    /// Starts `coexist serve` and waits until its ingress answers `/readyz` with 200.
    pub async fn serving(env: &[(&str, &str)]) -> (Process, std::net::SocketAddr) {
        let serve = Process::start("serve", env).await;
        let listen = serve.listen.expect("the ingress address");
        eventually(READY_WITHIN, "serve to be ready", || async {
            let ready = http(listen, "GET", "/readyz", &[], b"").await.0 == 200;
            ready.then_some(()).ok_or("/readyz is not 200".to_owned())
        })
        .await;
        (serve, listen)
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Its `/metrics` page.
    pub async fn metrics(&self) -> String {
        http(self.admin, "GET", "/metrics", &[], b"").await.1
    }

    /// The sum of a counter's series whose `reason` label is `reason` (0 when none).
    pub async fn labelled(&self, name: &str, reason: &str) -> f64 {
        let label = format!("reason=\"{reason}\"");
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The value of an unlabelled gauge or counter on its `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = http(self.admin, "GET", "/metrics", &[], b"").await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// Waits until worker processes `a` and `b` each own some of the `partitions` and together all
/// of them, with at least `posted` webhooks accepted: load flows through both.
pub async fn both_share_under_load(
    a: &Process,
    b: &Process,
    partitions: u16,
    posted: &std::sync::atomic::AtomicUsize,
    at_least: usize,
) {
    eventually(
        READY_WITHIN,
        "both workers to share the partitions under load",
        || async {
            let owned = (
                a.metric("coexist_partitions_owned").await,
                b.metric("coexist_partitions_owned").await,
            );
            let n = posted.load(Ordering::SeqCst);
            match owned {
                (Some(x), Some(y))
                    if x > 0.0 && y > 0.0 && x + y == partitions as f64 && n >= at_least =>
                {
                    Ok(())
                }
                _ => Err(format!("partitions owned {owned:?}, {n} webhooks posted")),
            }
        },
    )
    .await;
}

/// The exit code of a process that must exit within `limit` of `since`.
pub async fn exit_within(
    child: &mut std::process::Child,
    since: std::time::Instant,
    limit: Duration,
) -> Option<i32> {
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        assert!(since.elapsed() < limit, "still running {limit:?} later");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
