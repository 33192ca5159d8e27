//! How Augur calls the API server: one retry policy, in one place.
//!
//! - The client itself never retries (kube's own retry layer is off, see [`super::connect`])
//!   and every request has a deadline, so no retry is stacked on another and no call hangs.
//! - An attempt starts only while the [`Fence`] is open (this replica leads, and the run has
//!   not ended), and its deadline never reaches past the moment the fence closes.
//! - Throttling (429) and server errors (5xx) are retried after the server's `Retry-After`
//!   (capped) or an exponential backoff; a conflict (409) is retried at once, since the
//!   attempt re-reads what it writes.
//! - An attempt that got no answer (a deadline, a connection lost, a body cut short) is
//!   *ambiguous*: the write may have landed. The next attempt is told so, so that it reads
//!   back before writing again (see the executor).

use super::leader::Fence;
use std::future::Future;
use std::time::Duration;

/// Attempts per call, the first included.
pub const ATTEMPTS: u32 = 4;
/// The most one attempt may take, answer included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between attempts, whatever `Retry-After` asks.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The retry policy's numbers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub attempts: u32,
    pub attempt_timeout: Duration,
    /// The first backoff; it doubles per attempt.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

/// Augur's: 4 attempts of at most 5 s, backoff from 200 ms doubling to at most 5 s.
pub const LIMITS: Limits = Limits { attempts: ATTEMPTS, attempt_timeout: ATTEMPT_TIMEOUT, first_backoff: Duration::from_millis(200), max_backoff: MAX_BACKOFF };

/// What an attempt is told about the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first.
    pub number: u32,
    /// An earlier attempt got no answer, so its write may have landed: read back first.
    pub after_lost_answer: bool,
}

/// Why a call gave up.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The API server answered with a failure that another try would not change, or the
    /// attempts ran out on answered failures: nothing was written.
    #[error("{0}")]
    Answered(kube::Error),
    /// The last attempt got no answer: a write may or may not have landed.
    #[error("no answer from the API server: {0}")]
    Unanswered(String),
    /// This replica may not write any more (it lost the Lease, or the run ended).
    #[error("{0}")]
    Fenced(&'static str),
}

impl CallError {
    /// The HTTP status of an answered failure.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Answered(e) => super::status(e),
            _ => None,
        }
    }
}

/// How a failed attempt is handled.
#[derive(Debug, PartialEq)]
enum Next {
    /// Try again after this wait.
    Retry(Duration),
    /// Try again after this wait, reading back first: no answer came.
    Lost(Duration),
    /// Give up.
    GiveUp,
}

/// Calls `attempt` until it succeeds, the attempts run out, it fails for good or the fence
/// closes. `what` names the call in the log.
pub async fn call<T, F, Fut>(what: &str, fence: &Fence, attempt: F) -> Result<T, CallError>
where
    F: FnMut(Attempt) -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    call_with(&LIMITS, what, fence, attempt).await
}

/// [`call`] under other limits.
pub async fn call_with<T, F, Fut>(limits: &Limits, what: &str, fence: &Fence, mut attempt: F) -> Result<T, CallError>
where
    F: FnMut(Attempt) -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut this = Attempt { number: 1, after_lost_answer: false };
    let mut backoff = limits.first_backoff;
    loop {
        let left = fence.open().map_err(CallError::Fenced)?;
        let deadline = limits.attempt_timeout.min(left);
        let outcome = tokio::time::timeout(deadline, attempt(this)).await;
        let (next, error) = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => (judge(&e, backoff, limits.max_backoff), CallError::from_kube(e)),
            Err(_) => (Next::Lost(backoff), CallError::Unanswered(format!("no answer within {deadline:?}"))),
        };
        let wait = match next {
            Next::GiveUp => return Err(error),
            _ if this.number >= limits.attempts => return Err(error),
            Next::Retry(wait) => wait,
            Next::Lost(wait) => {
                this.after_lost_answer = true;
                wait
            }
        };
        tracing::warn!("{what}: attempt {} of {} failed ({error}); retrying in {wait:?}", this.number, limits.attempts);
        // A wait that outlasts the fence ends the call now: no attempt could follow it.
        let left = fence.open().map_err(CallError::Fenced)?;
        if wait >= left {
            return Err(CallError::Fenced("the wait before the next attempt outlasts this replica's leadership or the run"));
        }
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(limits.max_backoff);
        this.number += 1;
    }
}

impl CallError {
    fn from_kube(e: kube::Error) -> Self {
        if lost(&e) { CallError::Unanswered(e.to_string()) } else { CallError::Answered(e) }
    }
}

/// An error that means no (whole) answer came: the request may have been carried out.
fn lost(e: &kube::Error) -> bool {
    matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::SerdeError(_) | kube::Error::ReadEvents(_))
}

/// What to do after an attempt failed with `e`, the backoff being `backoff`.
fn judge(e: &kube::Error, backoff: Duration, max: Duration) -> Next {
    match e {
        kube::Error::Api(status) => match status.code {
            // The attempt re-reads what it writes: a conflict is worth an immediate retry.
            409 => Next::Retry(Duration::ZERO),
            // A gateway timeout says nothing of whether the write landed.
            504 => Next::Lost(retry_after(status, max).unwrap_or(backoff)),
            429 | 500..=599 => Next::Retry(retry_after(status, max).unwrap_or(backoff)),
            _ => Next::GiveUp,
        },
        e if lost(e) => Next::Lost(backoff),
        _ => Next::GiveUp,
    }
}

/// The server's `Retry-After` (its Status' `details.retryAfterSeconds`), capped.
fn retry_after(status: &kube::core::Status, max: Duration) -> Option<Duration> {
    let seconds = status.details.as_ref()?.retry_after_seconds;
    (seconds > 0).then(|| Duration::from_secs(u64::from(seconds)).min(max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;
    use kube::core::response::StatusDetails;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    /// Augur's limits, in milliseconds instead of seconds.
    const QUICK: Limits = Limits { attempts: ATTEMPTS, attempt_timeout: Duration::from_millis(50), first_backoff: Duration::from_millis(5), max_backoff: Duration::from_millis(50) };

    fn api(code: u16, retry_after_seconds: u32) -> kube::Error {
        let mut status = Status::failure("injected", "Injected").with_code(code);
        if retry_after_seconds > 0 {
            status.details = Some(serde_json::from_value::<StatusDetails>(serde_json::json!({ "retryAfterSeconds": retry_after_seconds })).unwrap());
        }
        kube::Error::Api(Box::new(status))
    }

    fn cut_short() -> kube::Error {
        kube::Error::SerdeError(serde_json::from_str::<serde_json::Value>("{\"kind\":").unwrap_err())
    }

    #[test]
    fn each_answer_is_judged_once() {
        let (backoff, max) = (Duration::from_millis(200), MAX_BACKOFF);
        assert_eq!(judge(&api(409, 0), backoff, max), Next::Retry(Duration::ZERO));
        assert_eq!(judge(&api(429, 2), backoff, max), Next::Retry(Duration::from_secs(2)));
        assert_eq!(judge(&api(429, 0), backoff, max), Next::Retry(backoff));
        assert_eq!(judge(&api(503, 3600), backoff, max), Next::Retry(MAX_BACKOFF), "Retry-After is capped");
        assert_eq!(judge(&api(504, 0), backoff, max), Next::Lost(backoff), "a gateway timeout may have landed");
        assert_eq!(judge(&api(403, 0), backoff, max), Next::GiveUp);
        assert_eq!(judge(&api(404, 0), backoff, max), Next::GiveUp);
        assert_eq!(judge(&cut_short(), backoff, max), Next::Lost(backoff), "a body cut short is no answer");
    }

    #[tokio::test]
    async fn a_call_retries_after_the_servers_wait_and_says_when_an_answer_was_lost() {
        let seen = std::sync::Mutex::new(Vec::new());
        let started = Instant::now();
        let result = call_with(&QUICK, "test", &Fence::always(), |attempt| {
            seen.lock().unwrap().push(attempt);
            async move {
                match attempt.number {
                    1 => Err(api(429, 1)),
                    2 => Err(cut_short()),
                    _ => Ok(attempt.number),
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
        assert!(started.elapsed() >= QUICK.max_backoff, "the 429's Retry-After (capped) was waited for");
        let seen = seen.into_inner().unwrap();
        assert!(!seen[1].after_lost_answer, "a 429 is an answer");
        assert!(seen[2].after_lost_answer, "the body cut short is not");
    }

    #[tokio::test]
    async fn an_attempt_that_never_answers_is_cut_at_its_deadline_and_the_call_ends() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let result: Result<(), _> = call_with(&QUICK, "test", &Fence::always(), |_| {
            calls.fetch_add(1, Ordering::Relaxed);
            std::future::pending()
        })
        .await;
        assert!(matches!(result, Err(CallError::Unanswered(_))), "{result:?}");
        assert_eq!(calls.load(Ordering::Relaxed), ATTEMPTS);
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_closed_fence_stops_the_call_before_its_next_attempt() {
        let fence = Fence::until(tokio::time::Instant::now() + Duration::from_millis(20));
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = call_with(&QUICK, "test", &fence, |_| {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err(api(503, 1)) }
        })
        .await;
        assert!(matches!(result, Err(CallError::Fenced(_))), "{result:?}");
        assert_eq!(calls.load(Ordering::Relaxed), 1, "a 50 ms wait outlasts the fence's 20 ms");
        let closed = Fence::until(tokio::time::Instant::now());
        let never: Result<(), _> = call_with(&QUICK, "test", &closed, |_| async { Ok(()) }).await;
        assert!(matches!(never, Err(CallError::Fenced("the run has ended"))), "{never:?}");
    }
}
