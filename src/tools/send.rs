//! `coexist send`: webhook bodies signed and posted as Meta does, to check that a deployment
//! accepts them. `503` and connection errors are retried with backoff, a bounded number of times
//! (Meta itself retries for days); any other answer is final.

use std::io::Write;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::runtime::retry::{retrying, Stopped};
use crate::runtime::secret::Secret;

/// Attempts at one body before its last answer is final.
pub const ATTEMPTS: u32 = 8;
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why `send` could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not an http:// URL (coexist send speaks plain HTTP; put TLS in front)")]
    Url(String),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// Moves every Meta timestamp of the bodies by the same amount, so that the latest is now (the
/// gaps between them kept): a story written once can be sent to a live deployment, whose clock
/// is the wall clock. Timestamps are the `timestamp` strings of Unix seconds and an entry's
/// `time`. Bodies that are not JSON are left as they are.
pub fn shift_to_now(bodies: &mut [(String, String)], now_secs: i64) {
    let latest = times(bodies).into_iter().flatten().max();
    if let Some(latest) = latest {
        shift_by(bodies, now_secs - latest);
    }
}

/// Moves the bodies' timestamps so that the first body's is now, and answers when each body is
/// due (Unix seconds, its latest timestamp): `send --pace` plays a story out in real time.
pub fn shift_to_start(bodies: &mut [(String, String)], now_secs: i64) -> Vec<i64> {
    let times = times(bodies);
    let Some(first) = times.iter().flatten().next().copied() else {
        return vec![now_secs; bodies.len()];
    };
    shift_by(bodies, now_secs - first);
    let mut due = now_secs;
    times
        .into_iter()
        .map(|t| {
            // A body without a time goes with the one before it.
            due = t.map_or(due, |t| (t + now_secs - first).max(due));
            due
        })
        .collect()
}

/// Each body's latest timestamp (`None`: not JSON, or none).
fn times(bodies: &[(String, String)]) -> Vec<Option<i64>> {
    bodies
        .iter()
        .map(|(_, b)| {
            let mut v: serde_json::Value = serde_json::from_str(b).ok()?;
            let mut latest = None;
            walk_times(&mut v, &mut |t| {
                latest = latest.max(Some(t));
                t
            });
            latest
        })
        .collect()
}

/// Moves every timestamp of the bodies by `offset` seconds.
fn shift_by(bodies: &mut [(String, String)], offset: i64) {
    for (_, body) in bodies.iter_mut() {
        if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(body) {
            walk_times(&mut v, &mut |t| t + offset);
            *body = v.to_string();
        }
    }
}

/// Calls `f` on every Meta timestamp of a body and writes back what it answers.
fn walk_times(v: &mut serde_json::Value, f: &mut impl FnMut(i64) -> i64) {
    fn walk(v: &mut serde_json::Value, f: &mut impl FnMut(i64) -> i64) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    match (key.as_str(), &*value) {
                        ("timestamp", serde_json::Value::String(s)) => {
                            if let Ok(t) = s.parse::<i64>() {
                                *value = serde_json::Value::String(f(t).to_string());
                            }
                        }
                        ("time", serde_json::Value::Number(n)) => {
                            if let Some(t) = n.as_i64() {
                                *value = serde_json::Value::from(f(t));
                            }
                        }
                        _ => walk(value, f),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| walk(i, f)),
            _ => {}
        }
    }
    walk(v, f)
}

/// What became of one body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The HTTP status of the last attempt.
    Status(u16),
    /// No answer at all (connection refused, timeout, ...): the last error.
    Unreachable(String),
}

impl Answer {
    fn accepted(&self) -> bool {
        matches!(self, Answer::Status(s) if (200..300).contains(s))
    }

    fn worth_retrying(&self) -> bool {
        matches!(self, Answer::Status(503) | Answer::Unreachable(_))
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Status(s) => {
                let reason = hyper::StatusCode::from_u16(*s)
                    .ok()
                    .and_then(|c| c.canonical_reason())
                    .unwrap_or("");
                write!(f, "{s} {reason}")
            }
            Answer::Unreachable(e) => write!(f, "no answer ({e})"),
        }
    }
}

/// Signs each body (`name`, JSON) with `secret`, posts it to `url`, prints one line per body
/// (`name: answer`); returns the bodies finally refused, with their answers.
pub async fn send(
    url: &str,
    secret: &Secret,
    bodies: &[(String, String)],
    out: &mut impl Write,
) -> Result<Vec<(String, Answer)>, Error> {
    let uri: hyper::Uri = url.parse().map_err(|_| Error::Url(url.to_owned()))?;
    if uri.scheme_str() != Some("http") {
        return Err(Error::Url(url.to_owned()));
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut refused = Vec::new();
    let never = tokio_util::sync::CancellationToken::new();
    for (name, body) in bodies {
        let signature = crate::services::ingress::sign(secret.expose(), body.as_bytes());
        let attempt = || async {
            let request = hyper::Request::post(uri.clone())
                .header("content-type", "application/json")
                .header("x-hub-signature-256", &signature)
                .body(Full::new(Bytes::from(body.clone())))
                .expect("a valid request");
            let answer = match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request)).await
            {
                Ok(Ok(response)) => {
                    let status = response.status().as_u16();
                    let _ = response.into_body().collect().await; // read it, keep the connection
                    Answer::Status(status)
                }
                Ok(Err(e)) => Answer::Unreachable(e.to_string()),
                Err(_) => Answer::Unreachable(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
            };
            match answer.accepted() {
                true => Ok(answer),
                false => Err(answer),
            }
        };
        let mut said = Ok(());
        let tell = |answer: &Answer, _: u32, delay: Duration| {
            if said.is_ok() {
                said = writeln!(
                    out,
                    "{name}: {answer}, retrying in {} ms",
                    delay.as_millis()
                );
            }
        };
        let final_answer =
            |answer: &Answer, attempt: u32| !answer.worth_retrying() || attempt >= ATTEMPTS;
        let answer = match retrying(&never, final_answer, tell, attempt).await {
            Ok(answer) => answer,
            Err(Stopped::GaveUp { error, .. }) => error,
            Err(Stopped::Interrupted) => Answer::Unreachable("interrupted".into()),
        };
        said?;
        writeln!(out, "{name}: {answer}")?;
        if !answer.accepted() {
            refused.push((name.clone(), answer));
        }
    }
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_starts_now_and_keeps_the_gaps() {
        let mut bodies = vec![
            (
                "a".to_owned(),
                r#"{"entry":[{"changes":[{"value":{"messages":[{"timestamp":"1000"}]}}]}]}"#
                    .to_owned(),
            ),
            ("b".to_owned(), "not json".to_owned()),
            (
                "c".to_owned(),
                r#"{"entry":[{"changes":[{"value":{"messages":[{"timestamp":"1007"}]}}]}]}"#
                    .to_owned(),
            ),
        ];
        let due = shift_to_start(&mut bodies, 5000);
        assert_eq!(due, [5000, 5000, 5007]);
        assert!(
            bodies[2].1.contains(r#""timestamp":"5007""#),
            "{}",
            bodies[2].1
        );
    }

    #[test]
    fn shifting_keeps_the_gaps_and_ends_now() {
        let mut bodies = vec![
            ("a".to_owned(), r#"{"entry":[{"time":1000,"changes":[{"value":{"messages":[{"timestamp":"1000"}]}}]}]}"#.to_owned()),
            ("b".to_owned(), r#"{"entry":[{"changes":[{"value":{"message_echoes":[{"timestamp":"1060","id":"1060"}]}}]}]}"#.to_owned()),
            ("c".to_owned(), "not json".to_owned()),
        ];
        shift_to_now(&mut bodies, 5000);
        assert!(bodies[0].1.contains(r#""time":4940"#), "{}", bodies[0].1);
        assert!(
            bodies[0].1.contains(r#""timestamp":"4940""#),
            "{}",
            bodies[0].1
        );
        assert!(
            bodies[1].1.contains(r#""timestamp":"5000""#),
            "{}",
            bodies[1].1
        );
        assert!(bodies[1].1.contains(r#""id":"1060""#), "other fields kept");
        assert_eq!(bodies[2].1, "not json");
    }
}
