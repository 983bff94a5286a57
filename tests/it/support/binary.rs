//! The `coexist` binary, run as a user runs it.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Runs the built `coexist` with only `env` (and PATH), from the repository's root.
pub fn coexist(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coexist"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// [`coexist`] against a test's namespace on the test servers, with `extra` variables.
pub fn coexist_in(ns: &str, extra: &[(&str, &str)], args: &[&str]) -> Output {
    let (amqp, redis) = (super::amqp_url(), super::redis_url());
    let mut env = vec![
        ("COEXIST_NAMESPACE", ns),
        ("COEXIST_AMQP_URL", amqp.as_str()),
        ("COEXIST_REDIS_URL", redis.as_str()),
    ];
    env.extend_from_slice(extra);
    coexist(args, &env, None)
}

/// stdout's JSON lines.
pub fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// A refusal: exit 2 and one line on stderr that contains `says`.
pub fn assert_refused(out: &Output, says: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(says), "{err}");
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
